import FoundationEssentials
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger

/// The incident record, found through the ledger's index instead of by reading the whole log:
/// a report's cost follows what it asks for. The HMAC-chained log stays the record; the index
/// is derived from it and caught up from it whenever it lags.
public enum IncidentIndex {
    static func add(_ incidents: [Incident], of log: IncidentLog, to ledger: Ledger) {
        var indexed: [Ledger.IndexedIncident] = []
        for incident in incidents {
            guard let sequence = incident.sequence else { continue }
            indexed.append(Ledger.IndexedIncident(
                sequence: sequence, timeUnixMilliseconds: incident.timeUnixMs,
                target: try? BlockTarget.parse(incident.target).target, record: incident.canonicalJSON))
        }
        try? ledger.index(indexed, of: log.path)
    }

    /// The records `query` asks for, the last `limit` of them, oldest first. The index is first
    /// brought up to the log's last record when it lags: records a Portcullis wrote before the
    /// index existed, or whose indexing failed, or another log than the one indexed.
    public static func incidents(_ query: IncidentQuery, limit: Int?, log: IncidentLog, ledger: Ledger) throws(ServiceError) -> [Incident] {
        let last: Int64?
        do {
            last = try log.lastSequence()
        } catch {
            throw ServiceError(.failed, error.description)
        }
        let indexed = try ServiceError.mapping { () throws(LedgerError) in try ledger.lastIndexedIncident(of: log.path) }
        if let last, last > (indexed ?? 0) {
            let records: [Incident]
            do {
                records = try log.read()
            } catch {
                throw ServiceError(.failed, error.description)
            }
            add(records.filter { ($0.sequence ?? 0) > (indexed ?? 0) }, of: log, to: ledger)
            let caught = try ServiceError.mapping { () throws(LedgerError) in try ledger.lastIndexedIncident(of: log.path) }
            if (caught ?? 0) < last {
                // The index cannot be written (a read-only ledger): answer from the log itself.
                let selected = query.filter(records)
                return limit.map { Array(selected.suffix($0)) } ?? selected
            }
        }
        let texts = try ServiceError.mapping { () throws(LedgerError) in
            try ledger.incidents(sinceUnixMilliseconds: query.sinceUnixMilliseconds, untilUnixMilliseconds: query.untilUnixMilliseconds,
                                 containing: query.address, limit: limit)
        }
        let decoder = JSONDecoder()
        return texts.compactMap { try? decoder.decode(Incident.self, from: Data($0.utf8)) }
    }
}
