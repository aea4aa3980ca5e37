/// A wall-clock instant broken into its UTC calendar fields, computed without the C library:
/// `gmtime_r` and `strftime` cost more than a microsecond a call, and `list --json` formats
/// three times for each of a million blocks.
public struct UTCTime: Sendable, Equatable {
    public var year: Int64
    /// 1...12
    public var month: Int
    /// 1...31
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Int
    public var millisecond: Int

    /// Times before 1970 round toward the past, as the calendar does.
    public init(unixMilliseconds: Int64) {
        let (seconds, milliseconds) = unixMilliseconds.floorDividedWithRemainder(by: 1000)
        let (days, secondOfDay) = seconds.floorDividedWithRemainder(by: 86_400)
        // Days to a proleptic Gregorian date (H. Hinnant's civil_from_days), counted in
        // 400-year eras that start on 1 March, so the leap day ends each year.
        let shifted = days + 719_468
        let era = shifted.floorDividedWithRemainder(by: 146_097).quotient
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153
        day = Int(dayOfYear - (153 * monthFromMarch + 2) / 5 + 1)
        month = Int(monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9)
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        hour = Int(secondOfDay / 3600)
        minute = Int(secondOfDay % 3600 / 60)
        second = Int(secondOfDay % 60)
        millisecond = Int(milliseconds)
    }

    /// `2026-12-02T17:26:47.316Z`: RFC 3339 in UTC with milliseconds.
    public var rfc3339: String {
        var json = JSONBytes(capacity: 24)
        json.appendRFC3339(self)
        return String(decoding: json.bytes, as: UTF8.self)
    }
}

extension Int64 {
    /// Division rounding toward negative infinity, with the remainder that goes with it (never negative
    /// for a positive divisor).
    func floorDividedWithRemainder(by divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        var (quotient, remainder) = quotientAndRemainder(dividingBy: divisor)
        if remainder < 0 {
            quotient -= 1
            remainder += divisor
        }
        return (quotient, remainder)
    }
}
