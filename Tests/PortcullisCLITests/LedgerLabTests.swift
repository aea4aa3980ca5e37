import Foundation
import Glibc
import PortcullisBPF
import PortcullisCore
import Testing

/// The ledger as the source of truth, end to end: reboots (the pins gone, the ledger kept),
/// crashes between the ledger's commit and the maps, a clock that reads earlier than the
/// ledger's last change, and a state directory that is full, read-only or damaged. Real
/// traffic in the netns lab says what the data plane does; the pinned maps are read in this
/// process (``PinnedMaps``), because `list` and `status` answer from the ledger.
@Suite(.enabled(if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: LedgerFile.sqlite3),
                "needs root, bpffs, iproute2, ping and sqlite3 (run as root; CI does)"))
struct LedgerLabTests {
    // MARK: - Reboots

    @Test func aRebootWithTheDaemonRestoresBlocksAllowlistAndAttachment() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "the daemon fixture needs curl")
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        defer {
            _ = try? daemon.stop()
            withExtendedLifetime(lab) {}
        }
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)\n    mode: native")
        try daemon.start()
        let oneHour = "203.0.113.10", shortLived = "203.0.113.20", prefix = "198.51.100.0/30"
        for arguments in [["block", Lab.attackerV4, "--reason", "reboot test"], ["block", oneHour, "--for", "1h"],
                          ["block", Lab.attackerV6, "--for", "1h"], ["block", prefix], ["allow", Lab.otherV4]] {
            let result = try daemon.portcullis(arguments)
            try #require(result.status == 0, "\(arguments): \(result)")
        }
        #expect(try lab.drops(from: Lab.attackerV4), "the permanent block drops before the reboot")
        #expect(try lab.drops(from: Lab.attackerV6, to: Lab.bastionV6), "the IPv6 block drops before the reboot")
        #expect(try lab.passes(from: Lab.otherV4), "the allowlisted address passes inside the blocked prefix")
        #expect(try lab.passes(from: Lab.otherV6, to: Lab.bastionV6))

        // The short block goes in last, just before the crash, so that no sweep of the
        // running daemon gets to it: it must expire while nothing runs.
        let short = try daemon.portcullis(["block", shortLived, "--for", "2s"])
        try #require(short.status == 0, "\(short)")
        let shortBlockedAt = Date()
        let before = try lab.listed()
        let listedAt = Date()
        let oneHourBefore = try #require(before[oneHour]?["remainingSeconds"] as? Double, "\(before)")

        daemon.signal(SIGKILL)
        _ = try daemon.stop()
        try lab.removePins()
        #expect(try lab.xdpOnBastion() == nil, "removing the pins (links included) detaches, as a reboot does")
        #expect(try lab.passes(from: Lab.attackerV4), "nothing enforces anything after the reboot")
        let untilExpired = 2.3 - Date().timeIntervalSince(shortBlockedAt)
        if untilExpired > 0 { Thread.sleep(forTimeInterval: untilExpired) }

        try daemon.start()
        #expect(try lab.drops(from: Lab.attackerV4), "the permanent block drops again after the restart")
        #expect(try lab.drops(from: Lab.attackerV6, to: Lab.bastionV6), "the IPv6 block drops again after the restart")
        #expect(try lab.passes(from: Lab.otherV4), "the allowlist is back in the maps: the prefix would drop it otherwise")

        let after = try lab.listed()
        #expect(Set(after.keys) == [Lab.attackerV4, oneHour, Lab.attackerV6, prefix], "\(after.keys.sorted())")
        #expect(after[Lab.attackerV4]?["permanent"] as? Bool == true)
        #expect(after[Lab.attackerV4]?["reason"] as? String == "reboot test")
        #expect(after[prefix]?["permanent"] as? Bool == true)
        // More than the tolerance has passed since (the 2.3 s wait alone), so a block
        // restarted at a full hour would be caught.
        let elapsed = Date().timeIntervalSince(listedAt)
        let expected = oneHourBefore - elapsed
        let oneHourAfter = try #require(after[oneHour]?["remainingSeconds"] as? Double)
        #expect(abs(oneHourAfter - expected) < 2, "the 1h block keeps its remaining time: listed \(oneHourAfter) s, expected \(expected) s (\(elapsed) s later)")
        // What the data plane enforces, not only what the ledger says.
        let inMaps = try PinnedMaps.held([oneHour, Lab.attackerV4, prefix, Lab.attackerV6, shortLived], pins: lab.pins)
        #expect(inMaps[Lab.attackerV4] == .permanent)
        #expect(inMaps[prefix] == .permanent)
        #expect(inMaps[shortLived] == .absent, "the expired block is not loaded into the new maps")
        if case .seconds(let left)? = inMaps[oneHour] {
            #expect(abs(left - expected) < 2, "the 1h block's map expiry: \(left) s left, expected \(expected) s")
        } else {
            Issue.record("the 1h block is not in the maps with an expiry: \(String(describing: inMaps[oneHour]))")
        }

        let expiries = daemon.incidents.filter { $0["action"] as? String == "expire" }
        #expect(expiries.map { $0["target"] as? String } == [shortLived], "one expire record, for the block that expired meanwhile: \(expiries)")

        let allowList = try daemon.portcullis(["allow", "--list", "--json"])
        #expect((try? decodeJSON(allowList.stdout) as? [String]) == [Lab.otherV4], "\(allowList)")
        #expect(try daemon.json("GET", "/v1/allowlist") as? [String] == [Lab.otherV4])

        let status = try lab.portcullis(["status", "--json"])
        let attachments = (try? decodeJSON(status.stdout) as? [String: Any])?["attachments"] as? [[String: Any]] ?? []
        #expect(attachments.contains {
            $0["interface"] as? String == lab.bastionInterface && $0["netns"] as? String == lab.bastionNamespace
                && $0["active"] as? Bool == true
        }, "status shows the interface attached again: \(status)")

        let (_, log) = try daemon.stop()
        #expect(log.contains("restored 4 blocks from the ledger into new maps"), "\(log)")
        #expect(log.contains("1 blocks expired while Portcullis was down; recorded as expired"), "\(log)")
    }

    @Test func aRebootWithoutTheDaemonIsRestoredByAttach() throws {
        let lab = try Lab()
        defer { withExtendedLifetime(lab) {} }
        try #require(try lab.attach().status == 0)
        for arguments in [["block", Lab.attackerV4, "--for", "1h"], ["block", "198.51.100.0/30"], ["allow", Lab.otherV4]] {
            let result = try lab.portcullis(arguments)
            try #require(result.status == 0, "\(arguments): \(result)")
        }
        #expect(try lab.drops())
        #expect(try lab.passes(from: Lab.otherV4))

        try lab.removePins()
        #expect(try lab.xdpOnBastion() == nil)
        #expect(try lab.passes(), "nothing enforces anything after the reboot")

        let attach = try lab.attach()
        #expect(attach.status == 0, "\(attach)")
        #expect(attach.stderr.contains("restored 2 blocks from the ledger into new maps"), "\(attach)")
        #expect(try lab.xdpOnBastion() != nil)
        #expect(try lab.drops(), "the attacker drops again")
        #expect(try lab.passes(from: Lab.otherV4), "the allowlist was restored with the blocks")
        let inMaps = try PinnedMaps.held([Lab.attackerV4], pins: lab.pins)
        if case .seconds(let left)? = inMaps[Lab.attackerV4] {
            #expect(left > 3500 && left <= 3601, "the 1h block's map expiry: \(left) s left")
        } else {
            Issue.record("the attacker's block is not in the maps with an expiry: \(String(describing: inMaps[Lab.attackerV4]))")
        }
    }

    // MARK: - A crash between the ledger and the maps

    @Test func aBlockCrashedAfterTheLedgerCommitIsAppliedByAttach() throws {
        let lab = try Lab()
        defer { withExtendedLifetime(lab) {} }
        try #require(try lab.attach().status == 0)
        let crashed = try lab.portcullis(["block", Lab.attackerV4], crashingAt: "ledger-committed")
        #expect(crashed.signaled && crashed.status == SIGKILL, "the process must die right after the commit: \(crashed)")
        #expect(try lab.passes(), "the maps have not taken the block yet")
        #expect(try LedgerFile.query("select count(*) from blocks", pins: lab.pins) == "1", "the ledger holds it")
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == 0)

        let attach = try lab.attach()
        #expect(attach.status == 0, "\(attach)")
        #expect(attach.stderr.contains("added 1 blocks the maps lacked (an interrupted change)"), "\(attach)")
        #expect(try lab.drops(), "reconciliation applied the ledger's block")
        #expect(try PinnedMaps.held([Lab.attackerV4], pins: lab.pins)[Lab.attackerV4] == .permanent)
    }

    @Test func aBatchCrashedAfterTheLedgerCommitIsAppliedWholeByAttach() throws {
        let lab = try Lab()
        let file = "/tmp/portcullis-test-\(lab.name)-batch.txt"
        defer {
            try? FileManager.default.removeItem(atPath: file)
            withExtendedLifetime(lab) {}
        }
        // Below the size from which a batch writes the maps beside the ledger: they are written
        // after the commit, so this crash leaves them empty.
        let count = 5_000
        try LedgerLabTests.bulkTargets(count).joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        try #require(try lab.attach().status == 0)

        let crashed = try lab.portcullis(["block", "--file", file, "--for", "1h"], crashingAt: "ledger-committed")
        #expect(crashed.signaled && crashed.status == SIGKILL, "\(crashed)")
        #expect(try LedgerFile.query("select count(*) from blocks", pins: lab.pins) == String(count))
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == 0, "the maps hold none of the batch")

        let attach = try lab.attach()
        #expect(attach.status == 0, "\(attach)")
        #expect(attach.stderr.contains("added \(count) blocks the maps lacked (an interrupted change)"), "\(attach)")
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == count, "the maps hold all of the batch")
        let sample = LedgerLabTests.bulkTargets(count).enumerated().filter { $0.offset % 1_249 == 0 }.map(\.element)
        for (target, held) in try PinnedMaps.held(sample, pins: lab.pins) {
            if case .seconds(let left) = held {
                #expect(left > 3500 && left <= 3601, "\(target): \(left) s left")
            } else {
                Issue.record("\(target) is \(held) in the maps")
            }
        }
        let page = try lab.portcullis(["list", "--limit", "1"])
        #expect(page.stdout.contains("(1 of \(count) shown"), "the ledger's total: \(page)")
    }

    /// A large batch writes the maps while the ledger writes its rows. Killed after the maps
    /// took it and before the ledger committed it, the batch never happened: attach takes out
    /// what it added and puts back the expiry it lengthened, and blocks outside it stay.
    @Test func aLargeBatchCrashedBeforeItsLedgerCommitIsTakenOutByAttach() throws {
        let lab = try Lab()
        let file = "/tmp/portcullis-test-\(lab.name)-batch.txt"
        defer {
            try? FileManager.default.removeItem(atPath: file)
            withExtendedLifetime(lab) {}
        }
        let count = 200_000
        let targets = LedgerLabTests.bulkTargets(count)
        try targets.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        try #require(try lab.attach().status == 0)
        // One target of the batch is blocked already, for less time; one block lies outside it.
        let refreshed = targets[count / 2]
        try #require(try lab.portcullis(["block", refreshed, "--for", "10m"]).status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4, "--for", "1h"]).status == 0)

        let crashed = try lab.portcullis(["block", "--file", file, "--for", "1h"], crashingAt: "batch-in-maps-before-commit")
        #expect(crashed.signaled && crashed.status == SIGKILL, "\(crashed)")
        #expect(try LedgerFile.query("select count(*) from blocks", pins: lab.pins) == "2", "the ledger took none of the batch")
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == count + 1, "the maps took all of it")

        let attach = try lab.attach()
        #expect(attach.status == 0, "\(attach)")
        #expect(attach.stderr.contains("removed \(count - 1) blocks of a batch that a crash stopped before the ledger took it"), "\(attach)")
        #expect(attach.stderr.contains("re-derived the expiry of 1 blocks from the ledger"), "the lengthened expiry is put back: \(attach)")
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == 2)
        if case .seconds(let left) = try PinnedMaps.held([refreshed], pins: lab.pins)[refreshed] {
            #expect(left > 500 && left <= 601, "\(refreshed) is back to its 10 minutes: \(left) s left")
        } else {
            Issue.record("\(refreshed) is not blocked for a time")
        }
        #expect(try lab.drops(), "the block outside the batch still drops")
        #expect(try LedgerFile.query("select count(*) from settings where name like 'uncommitted_batch%'", pins: lab.pins) == "0")

        // Loaded again, uninterrupted, the batch is whole in both.
        let loaded = try lab.portcullis(["block", "--file", file, "--for", "1h"])
        #expect(loaded.status == 0, "\(loaded)")
        #expect(try LedgerFile.query("select count(*) from blocks", pins: lab.pins) == String(count + 1))
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == count + 1)
    }

    @Test func anUnblockCrashedAfterTheLedgerCommitIsFinishedByAttach() throws {
        let lab = try Lab()
        defer { withExtendedLifetime(lab) {} }
        try #require(try lab.attach().status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4]).status == 0)
        #expect(try lab.drops())

        let crashed = try lab.portcullis(["unblock", Lab.attackerV4], crashingAt: "ledger-committed")
        #expect(crashed.signaled && crashed.status == SIGKILL, "\(crashed)")
        #expect(try lab.drops(), "the maps still hold the block the ledger lifted")
        #expect(try LedgerFile.query("select count(*) from blocks", pins: lab.pins) == "0")
        #expect(try LedgerFile.query("select count(*) from pending_removals", pins: lab.pins) == "1")

        let attach = try lab.attach()
        #expect(attach.status == 0, "\(attach)")
        #expect(attach.stderr.contains("removed 1 blocks lifted in the ledger but still in the maps"), "\(attach)")
        #expect(!attach.stderr.contains("found in the maps but not in the ledger"), "the lifted block must not be adopted back: \(attach)")
        #expect(try lab.passes(), "the unblock is finished")
        #expect(try lab.listed().isEmpty, "and not resurrected in the ledger")
        #expect(try LedgerFile.query("select count(*) from blocks", pins: lab.pins) == "0")
        #expect(try LedgerFile.query("select count(*) from pending_removals", pins: lab.pins) == "0")
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == 0)
    }

    /// `status` counts each map's entries from the ledger, never by walking a million: after an
    /// interrupted batch it shows what the maps hold once the next start has caught them up.
    @Test func statusCountsFromTheLedgerAndTheNextStartCatchesTheMapsUp() throws {
        let lab = try Lab()
        let file = "/tmp/portcullis-test-\(lab.name)-status.txt"
        defer {
            try? FileManager.default.removeItem(atPath: file)
            withExtendedLifetime(lab) {}
        }
        try LedgerLabTests.bulkTargets(1000).joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        try #require(try lab.attach().status == 0)
        let crashed = try lab.portcullis(["block", "--file", file], crashingAt: "ledger-committed")
        #expect(crashed.signaled, "\(crashed)")
        func reported() throws -> Int? {
            let status = try #require(try decodeJSON(try lab.portcullis(["status", "--json"]).stdout) as? [String: Any])
            let maps = status["maps"] as? [[String: Any]] ?? []
            return maps.first { $0["name"] as? String == "blocks_v4" }?["entries"] as? Int
        }
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == 0)
        #expect(try reported() == 1000, "the ledger holds the batch")
        try #require(try lab.attach().status == 0)
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == 1000, "the start caught the maps up")
        #expect(try reported() == 1000)
    }

    // MARK: - The clock

    /// The literal case: only the ledger's last change is in the future (a clock that ran
    /// ahead once, then was set back); the block was made a moment ago for 1h.
    @Test func aClockEarlierThanTheLastWriteNeverShortensABlock() throws {
        let lab = try Lab()
        defer { withExtendedLifetime(lab) {} }
        try #require(try lab.attach().status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4, "--for", "1h"]).status == 0)
        _ = try LedgerFile.query("update settings set value = value + 86400000 where name = 'last_write_ms'", pins: lab.pins)
        try lab.removePins()

        let list = try lab.portcullis(["list", "--json"])
        #expect(list.status == 0, "\(list)")
        #expect(list.stderr.contains("the wall clock reads") && list.stderr.contains("earlier than the ledger's last change"), "\(list)")
        let listed = (try? decodeJSON(list.stdout) as? [[String: Any]]) ?? []
        let remaining = listed.first { $0["target"] as? String == Lab.attackerV4 }?["remainingSeconds"] as? Double
        #expect((remaining ?? 0) >= 3500, "the 1h block is restored, not shortened: \(list)")
        let inMaps = try PinnedMaps.held([Lab.attackerV4], pins: lab.pins)[Lab.attackerV4]
        if case .seconds(let left)? = inMaps {
            #expect(left >= 3500, "the map expiry is at least about 1h: \(left) s")
        } else {
            Issue.record("the attacker's block is not in the new maps: \(String(describing: inMaps))")
        }
        #expect(try lab.attach().status == 0)
        #expect(try lab.drops(), "the restored block still drops")
        #expect(!((try? String(contentsOfFile: Command.incidentLog(pins: lab.pins), encoding: .utf8)) ?? "").contains(#""action":"expire""#),
                "a block made a moment ago for 1h must not be recorded as expired")
    }

    /// The consistent case: every time the ledger holds was written by a clock a day ahead of
    /// the one that reads now. The restore counts from the last change; a block made after
    /// that, with the clock as it reads now, must survive the next start.
    @Test func aBlockMadeAfterTheClockWentBackSurvivesTheNextStart() throws {
        let lab = try Lab()
        defer { withExtendedLifetime(lab) {} }
        try #require(try lab.attach().status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4, "--for", "1h"]).status == 0)
        let day = 86_400_000
        _ = try LedgerFile.query("""
            update blocks set expires_ms = expires_ms + \(day), created_ms = created_ms + \(day), refreshed_ms = refreshed_ms + \(day);
            update settings set value = value + \(day) where name = 'last_write_ms'
            """, pins: lab.pins)
        try lab.removePins()

        let list = try lab.portcullis(["list", "--json"])
        #expect(list.status == 0, "\(list)")
        #expect(list.stderr.contains("earlier than the ledger's last change"), "\(list)")
        let inMaps = try PinnedMaps.held([Lab.attackerV4], pins: lab.pins)[Lab.attackerV4]
        if case .seconds(let left)? = inMaps {
            #expect(left > 3500 && left <= 3601, "counted from the last change, the block has about 1h left: \(left) s")
        } else {
            Issue.record("the attacker's block is not in the new maps: \(String(describing: inMaps))")
        }
        #expect(try lab.attach().status == 0)
        #expect(try lab.drops())

        // A block made now, by the clock as it reads: then a start (attach reconciles).
        try #require(try lab.portcullis(["block", Lab.otherV4, "--for", "1h"]).status == 0)
        #expect(try lab.drops(from: Lab.otherV4))
        let again = try lab.attach()
        #expect(again.status == 0, "\(again)")
        #expect(!again.stderr.contains("expired while Portcullis was down"), "a block made seconds ago did not expire: \(again)")
        #expect(try lab.drops(from: Lab.otherV4), "the new 1h block still drops after the start")
        #expect(try lab.listed()[Lab.otherV4] != nil, "and is still in the ledger")
    }

    // MARK: - The state directory: full, read-only, damaged

    @Test func aFullDiskRefusesTheBlockWithOneLineAndChangesNoMap() throws {
        let lab = try Lab()
        let state = try TmpfsMount(at: Command.stateDirectory(pins: lab.pins), size: "2m")
        defer {
            state.unmount()
            withExtendedLifetime(lab) {}
        }
        try #require(try lab.attach().status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4]).status == 0)
        #expect(try lab.drops())
        try state.fill()

        let refused = try lab.portcullis(["block", Lab.otherV4])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderrLines.count == 1, "one line: \(refused)")
        #expect(refused.stderr.contains(LedgerFile.path(pins: lab.pins)), "names the ledger: \(refused)")
        #expect(refused.stderr.contains("the disk holding it is full"), "says the disk is full: \(refused)")
        #expect(try lab.passes(from: Lab.otherV4), "the refused block is not in the maps")
        #expect(try PinnedMaps.held([Lab.otherV4], pins: lab.pins)[Lab.otherV4] == .absent)
        #expect(try lab.drops(), "the existing block keeps dropping")
    }

    /// A large batch whose ledger transaction fails after some of its map writes were done
    /// (the disk fills part-way) takes them out again before it reports the failure.
    @Test func aLargeBatchThatFillsTheDiskLeavesNothingInTheMaps() throws {
        let lab = try Lab()
        let state = try TmpfsMount(at: Command.stateDirectory(pins: lab.pins), size: "3m")
        let file = "/tmp/portcullis-test-\(lab.name)-batch.txt"
        defer {
            state.unmount()
            try? FileManager.default.removeItem(atPath: file)
            withExtendedLifetime(lab) {}
        }
        let count = 200_000
        try LedgerLabTests.bulkTargets(count).joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        try #require(try lab.attach().status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4]).status == 0)

        let refused = try lab.portcullis(["block", "--file", file, "--for", "1h"])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderrLines.count == 1, "one line: \(refused)")
        #expect(refused.stderr.contains("the disk holding it is full"), "says the disk is full: \(refused)")
        #expect(!refused.stderr.contains("next `portcullis attach`"), "nothing is left for a later start: \(refused)")
        #expect(try PinnedMaps.blockCount(pins: lab.pins) == 1, "none of the batch stays in the maps")
        #expect(try lab.drops(), "the existing block keeps dropping")
    }

    @Test func aReadOnlyStateDirectoryRefusesTheBlockWithOneLine() throws {
        let lab = try Lab()
        let state = try TmpfsMount(at: Command.stateDirectory(pins: lab.pins), size: "4m")
        defer {
            state.unmount()
            withExtendedLifetime(lab) {}
        }
        try #require(try lab.attach().status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4]).status == 0)
        try state.remount("ro")

        let refused = try lab.portcullis(["block", Lab.otherV4])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderrLines.count == 1, "one line: \(refused)")
        #expect(refused.stderr.contains(LedgerFile.path(pins: lab.pins)), "names the ledger: \(refused)")
        #expect(refused.stderr.contains("cannot be written"), "says why: \(refused)")
        #expect(try lab.passes(from: Lab.otherV4), "the refused block is not in the maps")
        #expect(try lab.drops(), "the existing block keeps dropping")
    }

    /// Reading needs no write: an operator whose /var went read-only can still see what is
    /// blocked.
    @Test func listingAndStatusWorkOnAReadOnlyStateDirectory() throws {
        let name = "t" + UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(6)
        let pins = "/sys/fs/bpf/portcullis-test-\(name)"
        let state = try TmpfsMount(at: Command.stateDirectory(pins: pins), size: "4m")
        defer {
            state.unmount()
            _ = try? Command.portcullis(["purge", "--yes"], pins: pins)
            try? FileManager.default.removeItem(atPath: Command.incidentLog(pins: pins))
        }
        try #require(try Command.portcullis(["block", "203.0.113.30", "--for", "1h"], pins: pins).status == 0)
        try state.remount("ro")
        let list = try Command.portcullis(["list", "--json"], pins: pins)
        #expect(list.status == 0, "\(list)")
        let listed = (try? decodeJSON(list.stdout) as? [[String: Any]]) ?? []
        #expect(listed.map { $0["target"] as? String } == ["203.0.113.30"], "\(list)")
        let status = try Command.portcullis(["status", "--json"], pins: pins)
        #expect(status.status == 0, "\(status)")
    }

    /// `incidents` answers from the ledger's index of the record, and catches the index up from
    /// the log when it lags (records written before it, or whose indexing failed).
    @Test func incidentsComeFromTheIndexAndItCatchesUpWithTheLog() throws {
        let name = "t" + UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(6)
        let pins = "/sys/fs/bpf/portcullis-test-\(name)"
        defer {
            _ = try? Command.portcullis(["purge", "--yes"], pins: pins)
            try? FileManager.default.removeItem(atPath: Command.incidentLog(pins: pins))
        }
        try #require(try Command.portcullis(["block", "203.0.113.40", "--for", "1h"], pins: pins).status == 0)
        try #require(try Command.portcullis(["block", "203.0.113.41", "--for", "1h"], pins: pins).status == 0)
        #expect(try LedgerFile.query("select count(*) from incidents", pins: pins) == "2")
        func reported(_ address: String) throws -> [String] {
            let result = try Command.portcullis(["incidents", "--address", address, "--json"], pins: pins)
            let records = (try? decodeJSON(result.stdout) as? [[String: Any]]) ?? []
            return records.compactMap { $0["target"] as? String }
        }
        #expect(try reported("203.0.113.40") == ["203.0.113.40"])
        try LedgerFile.query("delete from incidents", pins: pins)
        #expect(try reported("203.0.113.41") == ["203.0.113.41"], "caught up from the log")
        #expect(try LedgerFile.query("select count(*) from incidents", pins: pins) == "2")
    }

    @Test func aDamagedLedgerRefusesTheBlockAndTheMapsKeepEnforcing() throws {
        let lab = try Lab()
        defer { withExtendedLifetime(lab) {} }
        try #require(try lab.attach().status == 0)
        try #require(try lab.portcullis(["block", Lab.attackerV4]).status == 0)
        #expect(try lab.drops())
        let path = LedgerFile.path(pins: lab.pins)
        try String(repeating: "this is not a ledger\n", count: 800).write(toFile: path, atomically: false, encoding: .utf8)
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }

        let refused = try lab.portcullis(["block", Lab.otherV4])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderrLines.count == 1, "one line: \(refused)")
        #expect(refused.stderr.contains(path), "names the ledger: \(refused)")
        #expect(refused.stderr.contains("is damaged or not a Portcullis ledger"), "\(refused)")
        #expect(try lab.drops(), "the maps still enforce what they held")
        #expect(try lab.passes(from: Lab.otherV4))

        // The error's advice: move it aside and start again; the start rebuilds it from the maps.
        try FileManager.default.moveItem(atPath: path, toPath: path + ".damaged")
        let attach = try lab.attach()
        #expect(attach.status == 0, "\(attach)")
        #expect(attach.stderr.contains("recorded 1 blocks found in the maps but not in the ledger"), "\(attach)")
        #expect(try lab.listed()[Lab.attackerV4]?["permanent"] as? Bool == true)
        #expect(try lab.drops())
    }

    /// Addresses in 240.0.0.0/4 (reserved): for loading only, never sent traffic.
    static func bulkTargets(_ count: Int) -> [String] {
        (1...count).map { "240.\($0 >> 16).\(($0 >> 8) & 255).\($0 & 255)" }
    }
}

// MARK: - Helpers

/// The pinned maps, read in this process: what the data plane enforces. `list` and `status`
/// answer from the ledger, so they cannot tell whether the maps took a change. Each call
/// opens and closes the maps, so nothing here keeps them alive after their pins are removed.
enum PinnedMaps {
    enum Held: Equatable, CustomStringConvertible {
        case absent, permanent, seconds(Double)
        var description: String {
            switch self {
            case .absent: "absent"
            case .permanent: "permanent"
            case .seconds(let left): "\(left) s left"
            }
        }
    }

    static func blockCount(pins: String) throws -> Int {
        let datapath = try Datapath.open(PinDirectory(path: pins))
        return try withExtendedLifetime(datapath) { try datapath.dataplaneBlocks().count }
    }

    /// Whether each target is in the maps, and for how long by the kernel's clock.
    static func held(_ targets: [String], pins: String) throws -> [String: Held] {
        let datapath = try Datapath.open(PinDirectory(path: pins))
        return try withExtendedLifetime(datapath) {
            let now = try datapath.now()
            var result: [String: Held] = [:]
            for text in targets {
                let target = try BlockTarget.parse(text).target
                guard let block = try datapath.dataplaneBlock(for: target) else {
                    result[text] = .absent
                    continue
                }
                switch block.expiry {
                case .never: result[text] = .permanent
                case .at(let jiffies):
                    let (seconds, attoseconds) = now.remaining(until: jiffies).components
                    result[text] = .seconds(Double(seconds) + Double(attoseconds) / 1e18)
                }
            }
            return result
        }
    }
}

/// The ledger file of a pin directory's state, read and changed with the sqlite3 CLI.
enum LedgerFile {
    static let sqlite3 = "/usr/bin/sqlite3"

    static func path(pins: String) -> String { Command.stateDirectory(pins: pins) + "/ledger.sqlite" }

    @discardableResult
    static func query(_ sql: String, pins: String) throws -> String {
        let result = try Command.run(sqlite3, [path(pins: pins), sql], timeout: 20)
        try #require(result.status == 0, "sqlite3 \(sql): \(result)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A small tmpfs, as a state directory that can be filled or made read-only. Unmounted by
/// ``unmount()`` (call it in a defer) or, failing that, when released.
final class TmpfsMount {
    let path: String
    private var mounted = false

    init(at path: String, size: String) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let result = try Command.run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0700", "tmpfs", path])
        try #require(result.status == 0, "mount tmpfs on \(path): \(result)")
        mounted = true
    }

    func remount(_ options: String) throws {
        let result = try Command.run("/usr/bin/mount", ["-o", "remount,\(options)", path])
        try #require(result.status == 0, "remount \(options) \(path): \(result)")
    }

    /// Writes zeros until the file system has no room left (bounded by its size, and by 64 MiB).
    func fill() throws {
        _ = try Command.run("/usr/bin/dd", ["if=/dev/zero", "of=\(path)/filler", "bs=4096", "count=16384"], timeout: 30)
        var info = statvfs()
        try #require(statvfs(path, &info) == 0 && info.f_bavail == 0, "\(path) still has \(info.f_bavail) free blocks")
    }

    func unmount() {
        guard mounted else { return }
        mounted = false
        if (try? Command.run("/usr/bin/umount", [path]))?.status != 0 {
            _ = try? Command.run("/usr/bin/umount", ["-l", path])
        }
        rmdir(path)
    }

    deinit { unmount() }
}

extension Lab {
    func attach() throws -> Result {
        try portcullis(["attach", bastionInterface, "--netns", bastionNamespace])
    }

    /// Runs portcullis with `PORTCULLIS_TEST_CRASH_AT` set: it kills itself at that point.
    func portcullis(_ arguments: [String], crashingAt point: String) throws -> Result {
        var environment = Command.environment(pins: pins)
        environment["PORTCULLIS_TEST_CRASH_AT"] = point
        return try Command.run(Command.portcullis, arguments, environment: environment)
    }

    /// Two pings from `source`, none answered.
    func drops(from source: String = Lab.attackerV4, to destination: String = Lab.bastionV4) throws -> Bool {
        try pingsAnswered(from: source, to: destination, count: 2) == 0
    }

    /// Two pings from `source`, both answered.
    func passes(from source: String = Lab.attackerV4, to destination: String = Lab.bastionV4) throws -> Bool {
        try pingsAnswered(from: source, to: destination, count: 2) == 2
    }

    /// What a reboot leaves: no pins at all, links included (which detaches), and the ledger.
    /// Waits (at most 3 s) for the program to leave the interface.
    func removePins() throws {
        let result = try Command.run("/usr/bin/rm", ["-rf", pins])
        try #require(result.status == 0, "rm -rf \(pins): \(result)")
        let deadline = Date().addingTimeInterval(3)
        while try xdpOnBastion() != nil && Date() < deadline { usleep(50_000) }
    }

    /// `list --json`, by target.
    func listed() throws -> [String: [String: Any]] {
        let list = try portcullis(["list", "--json"])
        let blocks = try #require(try decodeJSON(list.stdout) as? [[String: Any]], "\(list)")
        var byTarget: [String: [String: Any]] = [:]
        for block in blocks { if let target = block["target"] as? String { byTarget[target] = block } }
        return byTarget
    }
}
