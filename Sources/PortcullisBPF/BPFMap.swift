import CLibbpf
import Glibc

/// A BPF map, named by an open file descriptor.
///
/// Like `FileDescriptor`, this is a plain handle: whoever opened it closes it
/// (``Datapath`` owns every map it opens). Keys and values are the C structs from
/// `bpf/portcullis.h`, passed by their in-memory bytes.
public struct BPFMap: Sendable {
    public let fileDescriptor: CInt
    public let name: String

    init(fileDescriptor: CInt, name: String) {
        self.fileDescriptor = fileDescriptor
        self.name = name
    }

    /// Opens a pinned map: `bpf_obj_get(3)`.
    static func openPinned(at path: String, name: String) throws(DatapathError) -> BPFMap {
        let fd = bpf_obj_get(path)
        guard fd >= 0 else {
            throw .syscall("cannot open pinned map \(path)", errno: Glibc.errno)
        }
        return BPFMap(fileDescriptor: fd, name: name)
    }

    func close() { _ = Glibc.close(fileDescriptor) }

    /// Reads one value: `bpf_map_lookup_elem(3)`. Returns nil when the key is absent.
    func lookup<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        _ key: Key, as _: Value.Type = Value.self
    ) throws(DatapathError) -> Value? {
        var key = key
        var value = zeroed(Value.self)
        let result = bpf_map_lookup_elem(fileDescriptor, &key, &value)
        if result == 0 { return value }
        let code = Glibc.errno
        if code == ENOENT { return nil }
        throw .syscall("cannot read map \(name)", errno: code)
    }

    /// Reads every entry of a per-CPU array with one `bpf_map_lookup_batch(3)`: for each index,
    /// its value on every possible CPU. `Value`'s size must be a multiple of 8, the stride the
    /// kernel copies per CPU.
    func perCPUArray<Value: BitwiseCopyable>(entries: Int, as _: Value.Type = Value.self) throws(DatapathError) -> [[Value]] {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw .syscall("cannot count possible CPUs", errno: -Int32(cpus)) }
        var keys = (0..<UInt32(entries)).map { $0 }
        var values = [Value](repeating: zeroed(Value.self), count: entries * cpus)
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        var count = UInt32(entries)
        var cursor: UInt32 = 0
        let status = bpf_map_lookup_batch(fileDescriptor, nil, &cursor, &keys, &values, &count, &options)
        // ENOENT: the batch reached the end of the array, which it does for a whole one.
        guard status == 0 || Glibc.errno == ENOENT else {
            throw .syscall("cannot read map \(name)", errno: Glibc.errno)
        }
        return (0..<Int(count)).map { Array(values[($0 * cpus)..<(($0 + 1) * cpus)]) }
    }

    enum UpdateMode {
        case any, onlyNew, onlyExisting
        var flags: UInt64 {
            switch self {
            case .any: UInt64(BPF_ANY)
            case .onlyNew: UInt64(BPF_NOEXIST)
            case .onlyExisting: UInt64(BPF_EXIST)
            }
        }
    }

    /// Writes one value: `bpf_map_update_elem(3)`. Returns false when `mode`
    /// forbade the write (the key existed for `.onlyNew`, or was absent for `.onlyExisting`).
    @discardableResult
    func update<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        _ key: Key, _ value: Value, mode: UpdateMode = .any
    ) throws(DatapathError) -> Bool {
        var key = key
        var value = value
        if bpf_map_update_elem(fileDescriptor, &key, &value, mode.flags) == 0 { return true }
        let code = Glibc.errno
        if (code == EEXIST && mode == .onlyNew) || (code == ENOENT && mode == .onlyExisting) { return false }
        // A hash map says E2BIG when full, an LPM trie ENOSPC.
        if code == E2BIG || code == ENOSPC {
            throw DatapathError(.full, "map \(name) is full (capacity \(maxEntries)); remove entries, or recreate the state with a larger capacity")
        }
        throw .syscall("cannot write map \(name)", errno: code)
    }

    /// Removes one key: `bpf_map_delete_elem(3)`. Returns false when it was absent.
    @discardableResult
    func delete<Key: BitwiseCopyable>(_ key: Key) throws(DatapathError) -> Bool {
        var key = key
        if bpf_map_delete_elem(fileDescriptor, &key) == 0 { return true }
        let code = Glibc.errno
        if code == ENOENT { return false }
        throw .syscall("cannot delete from map \(name)", errno: code)
    }

    /// Every key, by walking the map with `bpf_map_get_next_key(3)`. The LPM
    /// tries have no batch operations, so this is how they are listed.
    func keys<Key: BitwiseCopyable>(as _: Key.Type = Key.self) throws(DatapathError) -> [Key] {
        var keys: [Key] = []
        var next = zeroed(Key.self)
        var result = bpf_map_get_next_key(fileDescriptor, nil, &next)
        while result == 0 {
            keys.append(next)
            var current = next
            result = bpf_map_get_next_key(fileDescriptor, &current, &next)
        }
        let code = Glibc.errno
        guard code == ENOENT else { throw .syscall("cannot walk map \(name)", errno: code) }
        return keys
    }

    /// Every entry of a hash map, read in batches with `bpf_map_lookup_batch(3)`.
    func entries<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        as _: Key.Type = Key.self, _: Value.Type = Value.self
    ) throws(DatapathError) -> [(key: Key, value: Value)] {
        var result: [(key: Key, value: Value)] = []
        var batchSize = 8192
        var keys = [Key](repeating: zeroed(Key.self), count: batchSize)
        var values = [Value](repeating: zeroed(Value.self), count: batchSize)
        // The hash map's batch cursor is a bucket index; give it room for either.
        var cursor = [UInt8](repeating: 0, count: max(MemoryLayout<Key>.size, 8))
        var next = cursor
        var first = true
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        while true {
            var count = UInt32(batchSize)
            let status = cursor.withUnsafeMutableBytes { cursorBytes in
                next.withUnsafeMutableBytes { nextBytes in
                    keys.withUnsafeMutableBytes { keyBytes in
                        values.withUnsafeMutableBytes { valueBytes in
                            bpf_map_lookup_batch(
                                fileDescriptor, first ? nil : cursorBytes.baseAddress, nextBytes.baseAddress,
                                keyBytes.baseAddress, valueBytes.baseAddress, &count, &options)
                        }
                    }
                }
            }
            let code = status == 0 ? 0 : Glibc.errno
            if code == ENOSPC && count == 0 {
                // One bucket holds more entries than the batch: retry it with room for them.
                batchSize *= 2
                keys = [Key](repeating: zeroed(Key.self), count: batchSize)
                values = [Value](repeating: zeroed(Value.self), count: batchSize)
                continue
            }
            guard code == 0 || code == ENOENT else {
                throw .syscall("cannot read map \(name) in batches", errno: code)
            }
            for index in 0..<Int(count) { result.append((keys[index], values[index])) }
            if code == ENOENT { return result }
            cursor = next
            first = false
        }
    }

    /// Up to `limit` entries of a hash map from where `token` left off (nil: from the start),
    /// with `bpf_map_lookup_batch(3)`, and the token to go on from, nil once the map is read to
    /// its end. The token is the kernel's bucket index: entries added or removed in between move
    /// nothing, so a walk in slices sees every entry that stayed, at most once.
    func entries<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        resumingAt token: [UInt8]?, limit: Int, as _: Key.Type = Key.self, _: Value.Type = Value.self
    ) throws(DatapathError) -> (entries: [(key: Key, value: Value)], next: [UInt8]?) {
        var batchSize = max(1, limit)
        var cursor = token ?? [UInt8](repeating: 0, count: max(MemoryLayout<Key>.size, 8))
        var next = cursor
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        while true {
            var keys = [Key](repeating: zeroed(Key.self), count: batchSize)
            var values = [Value](repeating: zeroed(Value.self), count: batchSize)
            var count = UInt32(batchSize)
            let status = cursor.withUnsafeMutableBytes { cursorBytes in
                next.withUnsafeMutableBytes { nextBytes in
                    keys.withUnsafeMutableBytes { keyBytes in
                        values.withUnsafeMutableBytes { valueBytes in
                            bpf_map_lookup_batch(
                                fileDescriptor, token == nil ? nil : cursorBytes.baseAddress, nextBytes.baseAddress,
                                keyBytes.baseAddress, valueBytes.baseAddress, &count, &options)
                        }
                    }
                }
            }
            let code = status == 0 ? 0 : Glibc.errno
            if code == ENOSPC && count == 0 {
                // One bucket holds more entries than the slice: read it whole.
                batchSize *= 2
                continue
            }
            guard code == 0 || code == ENOENT else {
                throw .syscall("cannot read map \(name) in batches", errno: code)
            }
            var result: [(key: Key, value: Value)] = []
            result.reserveCapacity(Int(count))
            for index in 0..<Int(count) { result.append((keys[index], values[index])) }
            return (result, code == ENOENT ? nil : next)
        }
    }

    /// Up to `limit` keys after `key` (nil: from the first), by `bpf_map_get_next_key(3)`, and
    /// whether the walk reached the end. An LPM trie has no batch operations; a key removed
    /// since makes the trie start again from its first key.
    func keys<Key: BitwiseCopyable>(after key: Key?, limit: Int, as _: Key.Type = Key.self) throws(DatapathError) -> (keys: [Key], finished: Bool) {
        var keys: [Key] = []
        var next = zeroed(Key.self)
        var result: CInt
        if var current = key {
            result = bpf_map_get_next_key(fileDescriptor, &current, &next)
        } else {
            result = bpf_map_get_next_key(fileDescriptor, nil, &next)
        }
        while result == 0 {
            keys.append(next)
            if keys.count >= limit { return (keys, false) }
            var current = next
            result = bpf_map_get_next_key(fileDescriptor, &current, &next)
        }
        let code = Glibc.errno
        guard code == ENOENT else { throw .syscall("cannot walk map \(name)", errno: code) }
        return (keys, true)
    }

    /// Writes many entries with `bpf_map_update_batch(3)`, replacing existing
    /// ones. Returns how many were written; a full map throws.
    func updateBatch<Key: BitwiseCopyable, Value: BitwiseCopyable>(
        keys: UnsafeBufferPointer<Key>, values: UnsafeBufferPointer<Value>
    ) throws(DatapathError) -> Int {
        precondition(keys.count == values.count)
        guard !keys.isEmpty else { return 0 }
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        var count = UInt32(keys.count)
        if bpf_map_update_batch(fileDescriptor, keys.baseAddress, values.baseAddress, &count, &options) == 0 {
            return Int(count)
        }
        let code = Glibc.errno
        if code == E2BIG || code == ENOSPC {
            throw DatapathError(.full, "map \(name) is full (capacity \(maxEntries)) after \(count) more entries; remove entries, or recreate the state with a larger capacity")
        }
        throw .syscall("cannot write map \(name) in batches (\(count) of \(keys.count) written)", errno: code)
    }

    /// Removes many keys with `bpf_map_delete_batch(3)`; absent keys end the batch early,
    /// so callers delete keys they just read while holding the writer lock.
    func deleteBatch<Key: BitwiseCopyable>(_ keys: [Key]) throws(DatapathError) -> Int {
        guard !keys.isEmpty else { return 0 }
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        var count = UInt32(keys.count)
        let status = keys.withUnsafeBytes { bytes in
            bpf_map_delete_batch(fileDescriptor, bytes.baseAddress, &count, &options)
        }
        if status == 0 { return Int(count) }
        let code = Glibc.errno
        if code == ENOENT {
            // Someone removed one first; fall back to one by one for the rest.
            var removed = Int(count)
            for key in keys[Int(count)...] where try delete(key) { removed += 1 }
            return removed
        }
        throw .syscall("cannot delete from map \(name) in batches", errno: code)
    }

    /// `bpf_map_get_info_by_fd(3)`.
    func info() throws(DatapathError) -> bpf_map_info {
        var info = bpf_map_info()
        var length = UInt32(MemoryLayout<bpf_map_info>.size)
        guard bpf_obj_get_info_by_fd(fileDescriptor, &info, &length) == 0 else {
            throw .syscall("cannot read the description of map \(name)", errno: Glibc.errno)
        }
        return info
    }

    var maxEntries: UInt32 { (try? info().max_entries) ?? 0 }

    /// Kernel memory the map holds now, from the `memlock` line of its fdinfo,
    /// which kernels since 6.4 compute from what the map really allocated.
    func memoryInUse() -> UInt64? {
        guard let file = fopen("/proc/self/fdinfo/\(fileDescriptor)", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("memlock:") {
                return UInt64(String(text.dropFirst("memlock:".count).filter(\.isNumber)))
            }
        }
        return nil
    }
}

/// A value of `type` with every byte zero, as the C structs expect.
@inline(__always)
func zeroed<T: BitwiseCopyable>(_: T.Type) -> T {
    withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { buffer in
        UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
        return buffer[0]
    }
}
