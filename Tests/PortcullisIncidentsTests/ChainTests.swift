import Foundation
import Glibc
import Synchronization
import Testing
@testable import PortcullisIncidents

@Suite struct ChainTests {
    @Test func recordsAreChainedAndVerify() throws {
        let scratch = Scratch()
        for n in 1...5 { try scratch.log.append(Scratch.incident(n)) }
        let records = try scratch.log.read()
        #expect(records.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(records[0].previous == nil)
        for n in 1..<5 { #expect(records[n].previous == records[n - 1].hash) }
        #expect(records.allSatisfy { ($0.hash?.count ?? 0) == 64 })
        let report = try scratch.log.verify()
        #expect(report.intact, "\(report.summary)")
        #expect(report.chained == 5 && report.records == 5 && report.beforeChain == 0)
        #expect(report.headHash == records[4].hash)
        #expect(report.head?.line == 5)
        #expect(report.summary.hasPrefix("intact: the chain covers 5 records (sequence 1 to 5) in 1 file"))
    }

    @Test func keyIsPrivateAndTheHashIsAnHMACOfTheLineWithoutIt() throws {
        let scratch = Scratch()
        try scratch.log.append(Scratch.incident(1))
        var status = stat()
        #expect(stat(scratch.log.keyPath, &status) == 0)
        #expect(status.st_mode & 0o777 == 0o600)
        let line = try #require(scratch.lines().first)
        let unsealed = try #require(IncidentChain.unsealed(Array(line.utf8)))
        // The canonical encoding is the sorted-keys JSON of the record without `hash`.
        var record = try JSONDecoder().decode(Incident.self, from: Data(line.utf8))
        #expect(record.hash == unsealed.hash)
        record.hash = nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(unsealed.canonical == Array(try encoder.encode(record)))
        let key = try #require(try IncidentKey.load(directory: scratch.stateDirectory))
        #expect(IncidentChain.code(for: unsealed.canonical, key: key) == unsealed.hash)
    }

    @Test func editedLineIsNamed() throws {
        let scratch = Scratch()
        for n in 1...5 { try scratch.log.append(Scratch.incident(n)) }
        var lines = scratch.lines()
        lines[2] = lines[2].replacingOccurrences(of: "198.51.100.3", with: "198.51.100.33")
        scratch.write(lines)
        let report = try scratch.log.verify()
        #expect(!report.intact)
        #expect(report.problem?.kind == .changed)
        #expect(report.problem?.at.line == 3)
        #expect(report.problem?.at.target == "198.51.100.33")
        #expect(report.problem?.at.time == "2026-05-28T20:26:43.000Z")
        #expect(report.summary.hasPrefix("broken: line 3 of \(scratch.logPath) (2026-05-28T20:26:43.000Z block 198.51.100.33) was changed"))
    }

    @Test func editedHashIsNamedToo() throws {
        let scratch = Scratch()
        for n in 1...3 { try scratch.log.append(Scratch.incident(n)) }
        var lines = scratch.lines()
        // Editing the content and putting the hash of another line in place changes nothing for the attacker.
        let other = String(lines[0].suffix(66))
        lines[1] = String(lines[1].dropLast(66)).replacingOccurrences(of: "test 2", with: "test X") + other
        scratch.write(lines)
        let report = try scratch.log.verify()
        #expect(report.problem?.kind == .changed)
        #expect(report.problem?.at.line == 2)
    }

    @Test func deletedLineIsNamed() throws {
        let scratch = Scratch()
        for n in 1...6 { try scratch.log.append(Scratch.incident(n)) }
        var lines = scratch.lines()
        lines.remove(at: 2)
        lines.remove(at: 2)
        scratch.write(lines)
        let report = try scratch.log.verify()
        #expect(report.problem?.kind == .removed)
        #expect(report.problem?.at.line == 3)
        #expect(report.problem?.at.target == "198.51.100.5")
        #expect(report.problem?.missingFrom == 3 && report.problem?.missingTo == 4)
        #expect(report.summary.contains("2 records were removed (sequence 3 to 4) before line 3 of"))
    }

    @Test func forgedInsertedLineIsNamed() throws {
        let scratch = Scratch()
        for n in 1...4 { try scratch.log.append(Scratch.incident(n)) }
        var lines = scratch.lines()
        let forged = lines[1].replacingOccurrences(of: "198.51.100.2", with: "203.0.113.66")
        lines.insert(forged, at: 2)
        scratch.write(lines)
        let report = try scratch.log.verify()
        #expect(report.problem?.kind == .inserted)
        #expect(report.problem?.at.line == 3)
        #expect(report.problem?.at.target == "203.0.113.66")
    }

    @Test func copiedLineIsNamed() throws {
        let scratch = Scratch()
        for n in 1...4 { try scratch.log.append(Scratch.incident(n)) }
        var lines = scratch.lines()
        lines.append(lines[1])
        scratch.write(lines)
        let report = try scratch.log.verify()
        #expect(report.problem?.kind == .inserted)
        #expect(report.problem?.at.line == 5)
        #expect(report.summary.contains("repeats sequence 2"))
    }

    @Test func unhashedLineAfterTheChainBeganIsInserted() throws {
        let scratch = Scratch()
        for n in 1...2 { try scratch.log.append(Scratch.incident(n)) }
        var lines = scratch.lines()
        lines.append(try Self.unhashedLine(Scratch.incident(9)))
        scratch.write(lines)
        let report = try scratch.log.verify()
        #expect(report.problem?.kind == .inserted)
        #expect(report.problem?.at.line == 3)
    }

    @Test func oldRecordsWithoutHashesAreCountedNotBroken() throws {
        let scratch = Scratch()
        scratch.write([try Self.unhashedLine(Scratch.incident(1)), try Self.unhashedLine(Scratch.incident(2))])
        let before = try scratch.log.verify()
        #expect(before.intact && before.chained == 0 && before.beforeChain == 2)
        #expect(before.summary == "intact: no chain yet; 2 records before the chain began")
        try scratch.log.append(Scratch.incident(3))
        try scratch.log.append(Scratch.incident(4))
        let records = try scratch.log.read()
        #expect(records.map(\.sequence) == [nil, nil, 1, 2])
        #expect(records[2].previous == nil)
        let report = try scratch.log.verify()
        #expect(report.intact, "\(report.summary)")
        #expect(report.beforeChain == 2 && report.chained == 2 && report.records == 4)
        #expect(report.summary.contains("; 2 records before the chain began"))
        // Removing the chain's first record is still seen: the old records show it began here.
        var lines = scratch.lines()
        lines.remove(at: 2)
        scratch.write(lines)
        #expect(try scratch.log.verify().problem?.kind == .removed)
    }

    @Test func chainRestartIsBroken() throws {
        let scratch = Scratch()
        for n in 1...2 { try scratch.log.append(Scratch.incident(n)) }
        let first = scratch.lines()
        // A second chain (another key) appended after the first.
        let other = Scratch()
        for n in 3...4 { try other.log.append(Scratch.incident(n)) }
        scratch.write(first + other.lines())
        let report = try scratch.log.verify()
        #expect(!report.intact)
        #expect(report.problem?.at.line == 3)
    }

    @Test func rotationContinuesTheChain() throws {
        let scratch = Scratch()
        for n in 1...3 { try scratch.log.append(Scratch.incident(n)) }
        #expect(rename(scratch.logPath, scratch.log.rotatedPath(1)) == 0)
        for n in 4...5 { try scratch.log.append(Scratch.incident(n)) }
        let old = try IncidentLog(path: scratch.log.rotatedPath(1), stateDirectory: scratch.stateDirectory).read()
        let new = try scratch.log.read()
        #expect(new.first?.previous == old.last?.hash)
        #expect(new.first?.sequence == 4)
        #expect(rename(scratch.log.rotatedPath(1), scratch.log.rotatedPath(2)) == 0)
        #expect(rename(scratch.logPath, scratch.log.rotatedPath(1)) == 0)
        // logrotate's `create`: an empty new file.
        scratch.write([])
        try scratch.log.append(Scratch.incident(6))
        let report = try scratch.log.verify()
        #expect(report.intact, "\(report.summary)")
        #expect(report.files == [scratch.log.rotatedPath(2), scratch.log.rotatedPath(1), scratch.logPath])
        #expect(report.chained == 6 && report.head?.sequence == 6)
        #expect(report.summary.contains("(sequence 1 to 6) in 3 files"))

        // Once the oldest file is dropped, the chain begins later: noted, not broken.
        let kept = scratch.bytes(scratch.log.rotatedPath(2))
        unlink(scratch.log.rotatedPath(2))
        let dropped = try scratch.log.verify()
        #expect(dropped.intact && dropped.firstSequence == 4)
        #expect(dropped.summary.contains("records 1 to 3 are not in these files"))
        FileManager.default.createFile(atPath: scratch.log.rotatedPath(2), contents: Data(kept))

        // An edit in a rotated file, and a removal at the seam between two files.
        var rotated = scratch.lines(scratch.log.rotatedPath(2))
        rotated[1] = rotated[1].replacingOccurrences(of: "test 2", with: "test two")
        scratch.write(rotated, to: scratch.log.rotatedPath(2))
        let edited = try scratch.log.verify()
        #expect(edited.problem?.kind == .changed)
        #expect(edited.problem?.at.path == scratch.log.rotatedPath(2) && edited.problem?.at.line == 2)
        FileManager.default.createFile(atPath: scratch.log.rotatedPath(2), contents: Data(kept))
        var newer = scratch.lines(scratch.log.rotatedPath(1))
        newer.removeFirst()
        scratch.write(newer, to: scratch.log.rotatedPath(1))
        let seam = try scratch.log.verify()
        #expect(seam.problem?.kind == .removed)
        #expect(seam.problem?.at.path == scratch.log.rotatedPath(1) && seam.problem?.at.line == 1)
        #expect(seam.problem?.missingFrom == 4 && seam.problem?.missingTo == 4)
    }

    /// A writer that opened the log just before logrotate renamed it writes to the new file, not the old.
    @Test func writerWaitingOnTheLockFollowsARotation() throws {
        let scratch = Scratch()
        for n in 1...2 { try scratch.log.append(Scratch.incident(n)) }
        let holder = open(scratch.logPath, O_RDWR)
        #expect(holder >= 0 && flock(holder, LOCK_EX) == 0)
        let log = scratch.log
        let done = Mutex<Result<Void, IncidentLogError>?>(nil)
        let writer = Thread {
            let result = Result { () throws(IncidentLogError) in _ = try log.append(Scratch.incident(3)) }
            done.withLock { $0 = result }
        }
        writer.start()
        usleep(300_000)
        #expect(done.withLock { $0 == nil }, "the append did not wait for the lock")
        let oldBytes = scratch.bytes()
        #expect(rename(scratch.logPath, scratch.log.rotatedPath(1)) == 0)
        scratch.write([])
        flock(holder, LOCK_UN)
        close(holder)
        for _ in 0..<500 where done.withLock({ $0 == nil }) { usleep(10_000) }
        try done.withLock { $0 }?.get()
        let unchanged = scratch.bytes(scratch.log.rotatedPath(1)) == oldBytes
        #expect(unchanged, "the record went into the rotated file")
        let records = try scratch.log.read()
        #expect(records.map(\.sequence) == [3])
        let report = try scratch.log.verify()
        #expect(report.intact && report.chained == 3 && report.files.count == 2, "\(report.summary)")
    }

    @Test func concurrentWritersKeepOneChain() throws {
        let scratch = Scratch()
        let log = scratch.log
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for n in 0..<25 {
                do { try log.append(Scratch.incident(worker * 100 + n)) } catch { failures.withLock { $0 += 1 } }
            }
        }
        #expect(failures.withLock { $0 } == 0)
        let report = try log.verify()
        #expect(report.intact, "\(report.summary)")
        #expect(report.chained == 100 && report.head?.sequence == 100)
    }

    @Test func verifyNeedsTheKey() throws {
        let scratch = Scratch()
        try scratch.log.append(Scratch.incident(1))
        let elsewhere = IncidentLog(path: scratch.logPath, stateDirectory: scratch.directory + "/nowhere")
        #expect(throws: IncidentLogError.self) { try elsewhere.verify() }
        do {
            _ = try elsewhere.verify()
        } catch {
            #expect(error.description.contains("no key at \(scratch.directory)/nowhere/incident-key"))
        }
        // Another key: every record fails.
        let other = Scratch()
        try other.log.append(Scratch.incident(1))
        let wrongKey = IncidentLog(path: scratch.logPath, stateDirectory: other.stateDirectory)
        #expect(try wrongKey.verify().problem?.kind == .changed)
    }

    @Test func keyReadableByOthersIsRefused() throws {
        let scratch = Scratch()
        try scratch.log.append(Scratch.incident(1))
        chmod(scratch.log.keyPath, 0o644)
        #expect(throws: IncidentLogError.self) { try scratch.log.append(Scratch.incident(2)) }
        #expect(throws: IncidentLogError.self) { try scratch.log.verify() }
        #expect(scratch.lines().count == 1)
    }

    @Test func missingLogIsAnError() throws {
        let scratch = Scratch()
        #expect(throws: IncidentLogError.self) { try scratch.log.verify() }
        #expect(try scratch.log.read().isEmpty)
    }

    static func unhashedLine(_ incident: Incident) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(incident), as: UTF8.self)
    }
}
