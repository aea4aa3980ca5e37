import Crypto
import FoundationEssentials
import Glibc
import PortcullisCore

/// What `portcullis incidents verify` found.
public struct IncidentChainReport: Codable, Sendable, Equatable {
    /// A line of one of the files, with what its record says (when it is one).
    public struct Place: Codable, Sendable, Equatable {
        public var path: String
        public var line: Int
        public var time: String?
        public var action: String?
        public var target: String?
        public var sequence: Int64?
    }

    public enum ProblemKind: String, Codable, Sendable {
        /// Its hash does not match its content.
        case changed
        /// Records are missing before it.
        case removed
        /// It is not part of the chain: forged, copied, or out of order.
        case inserted
        /// A new chain starts where the old one should go on.
        case restarted
        /// A line inside the chain that is not a record.
        case notARecord
    }

    public struct Problem: Codable, Sendable, Equatable {
        public var kind: ProblemKind
        public var at: Place
        /// For `removed`: the first and last missing sequence numbers.
        public var missingFrom: Int64?
        public var missingTo: Int64?
        public var message: String
    }

    public var intact: Bool
    /// Oldest first: path.N, ..., path.1, path.
    public var files: [String]
    /// Records read in all files.
    public var records: Int
    /// Records checked in the chain.
    public var chained: Int
    /// Records written before the chain began (without hashes).
    public var beforeChain: Int
    /// Lines before the chain began that are not records (old torn writes).
    public var linesNotRecords: Int
    public var firstSequence: Int64?
    /// The last record of the chain and its hash: keep them elsewhere to detect later truncation.
    public var head: Place?
    public var headHash: String?
    /// A last line without its end: a write a crash interrupted, not a record.
    public var interruptedWrite: Place?
    public var problem: Problem?
    /// One line for people; untrusted text in it is escaped.
    public var summary: String
}

extension IncidentLog {
    /// Walks path.N ... path.1, path in order and checks every record's hash and
    /// link; stops at the first record that was changed, removed or inserted.
    public func verify() throws(IncidentLogError) -> IncidentChainReport {
        var rotated: [String] = []
        var n = 1
        while n <= 10_000 && IncidentLog.exists(rotatedPath(n)) {
            rotated.append(rotatedPath(n))
            n += 1
        }
        let paths = rotated.reversed() + (IncidentLog.exists(path) ? [path] : [])
        guard !paths.isEmpty else {
            throw IncidentLogError(description: "no incident log at \(path); give the right one with --incident-log or PORTCULLIS_INCIDENT_LOG")
        }
        var walker = ChainWalker(keyDirectory: stateDirectory)
        for path in paths {
            guard let file = try IncidentFile.open(path, forWriting: false) else { continue }
            defer { file.close() }
            // The length under a shared lock: only whole records, never one a writer is still writing.
            try file.lock(exclusive: false)
            let length: Int64
            do throws(IncidentLogError) { length = try file.size() } catch {
                file.unlock()
                throw error
            }
            file.unlock()
            walker.files.append(path)
            try file.forEachLine(upTo: length) { line, number, whole throws(IncidentLogError) in
                try walker.take(line, path: path, line: number, whole: whole)
            }
            if walker.problem != nil { break }
        }
        return walker.finish()
    }

    static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }
}

/// What the chain and its messages need of a record: Incident's required fields
/// (a line without them is not a record) and the chain's. Decoding only these
/// keeps `verify` and the writer's look at the tail cheap.
struct ChainRecord: Decodable {
    var time: String
    var timeUnixMs: Int64
    var action: Incident.Action
    var target: String
    var source: String
    var sequence: Int64?
    var previous: String?
    var hash: String?
}

/// The state of one walk along the chain.
struct ChainWalker {
    let keyDirectory: String
    var files: [String] = []
    var records = 0
    var chained = 0
    var beforeChain = 0
    var linesNotRecords = 0
    var firstSequence: Int64?
    var began = false
    var last: (hash: String, sequence: Int64, place: IncidentChainReport.Place)?
    /// A record whose hash failed: changed, or inserted; the next line tells which.
    var pending: (place: IncidentChainReport.Place, hash: String)?
    var interruptedWrite: IncidentChainReport.Place?
    var problem: IncidentChainReport.Problem?
    var keyed: HMAC<SHA256>?
    let decoder = JSONDecoder()

    init(keyDirectory: String) { self.keyDirectory = keyDirectory }

    mutating func take(_ line: [UInt8], path: String, line number: Int, whole: Bool) throws(IncidentLogError) -> Bool {
        let record = try? decoder.decode(ChainRecord.self, from: Data(line))
        let place = IncidentChainReport.Place(
            path: path, line: number, time: record?.time, action: record?.action.rawValue, target: record?.target,
            sequence: record?.sequence)
        guard whole else {
            // Only the very end of a file can lack its "\n".
            if pending == nil && record?.hash == nil {
                interruptedWrite = place
                return false
            }
            return try takeRecord(record, line: line, place: place)
        }
        return try takeRecord(record, line: line, place: place)
    }

    private mutating func takeRecord(_ record: ChainRecord?, line: [UInt8], place: IncidentChainReport.Place) throws(IncidentLogError) -> Bool {
        guard let record else {
            if let pending { return fail(.changed, pending.place, changedMessage(pending.place)) }
            if !began {
                linesNotRecords += 1
                return true
            }
            return fail(.notARecord, place, "\(describe(place)) is not a record: it was inserted or damaged")
        }
        records += 1
        guard let stored = record.hash else {
            if let pending { return fail(.changed, pending.place, changedMessage(pending.place)) }
            if !began {
                beforeChain += 1
                return true
            }
            return fail(.inserted, place, "\(describe(place)) was inserted: it has no hash, and the chain began before it")
        }
        let keyed = try keyedHMAC()
        let valid = IncidentChain.unsealed(line).map { $0.hash == stored && IncidentChain.code(for: $0.canonical, keyed: keyed) == stored } ?? false
        if let pending {
            // A changed record's successor links to that record's own hash; an inserted
            // one's successor skips it and links to the record before it.
            let linksToBefore = last.map { record.previous == $0.hash } ?? (record.previous == nil)
            if valid && linksToBefore {
                return fail(.inserted, pending.place,
                            "\(describe(pending.place)) was inserted: its hash does not match, and the record after it links to the one before it")
            }
            return fail(.changed, pending.place, changedMessage(pending.place))
        }
        guard valid else {
            began = true
            pending = (place, stored)
            return true
        }
        let sequence = record.sequence ?? 0
        if !began {
            began = true
            firstSequence = sequence
            if record.previous != nil && (beforeChain > 0 || linesNotRecords > 0) {
                return fail(.removed, place,
                            "records were removed before \(describe(place)): the first record of the chain links to one that is not here",
                            missing: sequence > 1 ? (1, sequence - 1) : nil)
            }
        } else if let last {
            if record.previous == nil {
                return fail(.restarted, place,
                            "the chain restarts at \(describe(place)): the records before it were replaced, or the key \(keyDirectory)/\(IncidentKey.fileName) was lost and made anew")
            }
            if record.previous != last.hash {
                if sequence > last.sequence + 1 {
                    let count = sequence - last.sequence - 1
                    return fail(.removed, place,
                                "\(count) record\(count == 1 ? " was" : "s were") removed (sequence \(last.sequence + 1)\(count == 1 ? "" : " to \(sequence - 1)")) before \(describe(place))",
                                missing: (last.sequence + 1, sequence - 1))
                }
                if sequence <= last.sequence {
                    return fail(.inserted, place, "\(describe(place)) was inserted: it repeats sequence \(sequence), a copy of an earlier record or one out of order")
                }
                return fail(.inserted, place, "\(describe(place)) was inserted: it links to a record other than \(describe(last.place)), one of another chain")
            }
        }
        chained += 1
        last = (stored, sequence, place)
        return true
    }

    private mutating func keyedHMAC() throws(IncidentLogError) -> HMAC<SHA256> {
        if let keyed { return keyed }
        guard let loaded = try IncidentKey.load(directory: keyDirectory) else {
            throw IncidentLogError(description: "cannot check the chain: there is no key at \(keyDirectory)/\(IncidentKey.fileName); give the state directory that holds it with --state-dir or PORTCULLIS_STATE_DIR")
        }
        let made = HMAC<SHA256>(key: loaded)
        keyed = made
        return made
    }

    private mutating func fail(_ kind: IncidentChainReport.ProblemKind, _ place: IncidentChainReport.Place, _ message: String,
                               missing: (Int64, Int64)? = nil) -> Bool {
        problem = .init(kind: kind, at: place, missingFrom: missing?.0, missingTo: missing?.1, message: message)
        return false
    }

    private func changedMessage(_ place: IncidentChainReport.Place) -> String {
        "\(describe(place)) was changed: its hash does not match its content"
    }

    func describe(_ place: IncidentChainReport.Place) -> String {
        var what = "line \(place.line) of \(place.path)"
        let fields = [place.time, place.action, place.target].compactMap { $0 }
        if !fields.isEmpty { what += " (\(fields.joined(separator: " ")))" }
        return TerminalText.escaped(what)
    }

    mutating func finish() -> IncidentChainReport {
        if let pending, problem == nil { _ = fail(.changed, pending.place, "\(changedMessage(pending.place)) (or it was appended without the key)") }
        var summary: String
        if let problem {
            summary = "broken: \(problem.message)"
        } else if chained == 0 {
            summary = records == 0 ? "intact: no records" : "intact: no chain yet"
            if beforeChain > 0 { summary += "; \(beforeChain) record\(beforeChain == 1 ? "" : "s") before the chain began" }
        } else {
            let first = firstSequence ?? 1
            summary = "intact: the chain covers \(chained) record\(chained == 1 ? "" : "s")"
            if let last { summary += " (sequence \(first) to \(last.sequence))" }
            summary += " in \(files.count) file\(files.count == 1 ? "" : "s")"
            if beforeChain > 0 { summary += "; \(beforeChain) record\(beforeChain == 1 ? "" : "s") before the chain began" }
            if first > 1 {
                summary += "; records 1 to \(first - 1) are not in these files (rotated away, or removed)"
            }
            if let last { summary += "; head: sequence \(last.sequence), hash \(last.hash), \(describe(last.place))" }
        }
        if linesNotRecords > 0 { summary += "; \(linesNotRecords) line\(linesNotRecords == 1 ? "" : "s") before the chain are not records" }
        if let interruptedWrite, problem == nil {
            summary += "; line \(interruptedWrite.line) of \(TerminalText.escaped(interruptedWrite.path)) is an interrupted write, not a record (the next record cuts it off)"
        }
        return IncidentChainReport(
            intact: problem == nil, files: files, records: records, chained: chained, beforeChain: beforeChain,
            linesNotRecords: linesNotRecords, firstSequence: firstSequence, head: last?.place, headHash: last?.hash,
            interruptedWrite: problem == nil ? interruptedWrite : nil, problem: problem, summary: summary)
    }
}
