import Foundation
import Glibc
import PortcullisSystem
import Testing

@Suite struct SystemCallTests {
    @Test func localGroupsAreReadFromTheGroupFile() throws {
        let path = "/tmp/portcullis-group-\(UUID().uuidString.prefix(8))"
        try "root:x:0:\nwazuh:x:998:\nportcullis:x:997:alice,bob\nbroken-line\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        #expect(LocalGroups.id(of: "wazuh", in: path) == 998)
        #expect(LocalGroups.id(of: "portcullis", in: path) == 997)
        #expect(LocalGroups.id(of: "nobody-here", in: path) == nil)
        #expect(LocalGroups.id(of: "wazuh", in: "/nonexistent/group") == nil)
    }

    @Test func makeDirectoriesCreatesParentsAndNamesTheOneItCannotMake() throws {
        let base = "/tmp/portcullis-mkdir-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: base) }
        guard case .success = SystemCall.makeDirectories("\(base)/a/b/c", mode: 0o750) else {
            Issue.record("mkdir -p failed")
            return
        }
        #expect(FileManager.default.fileExists(atPath: "\(base)/a/b/c"))
        try "x".write(toFile: "\(base)/file", atomically: true, encoding: .utf8)
        guard case .failure(let error) = SystemCall.makeDirectories("\(base)/file/d", mode: 0o750) else {
            Issue.record("a directory under a file was made")
            return
        }
        #expect(error.path == "\(base)/file/d")
        #expect(error.description.hasPrefix("cannot create directory \(base)/file/d: "))
    }

    @Test func makeDirectoriesKeepsARelativePathRelative() throws {
        // Relative to the working directory, not to the root: the name is unique, so nothing at / could be mistaken for it.
        let name = "portcullis-mkdir-relative-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: name) }
        guard case .success = SystemCall.makeDirectories("\(name)/a", mode: 0o750) else {
            Issue.record("mkdir -p of a relative path failed")
            return
        }
        #expect(FileManager.default.fileExists(atPath: "\(FileManager.default.currentDirectoryPath)/\(name)/a"))
        #expect(!FileManager.default.fileExists(atPath: "/\(name)"))
    }

    @Test func readAllReadsFromAnOffsetAndStopsAtTheEnd() throws {
        let path = "/tmp/portcullis-pread-\(UUID().uuidString.prefix(8))"
        try Data("0123456789".utf8).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(SystemCall.readAll(fd, count: 4, at: 3) == .success(Array("3456".utf8)))
        #expect(SystemCall.readAll(fd, count: 100, at: 8) == .success(Array("89".utf8)))
        #expect(SystemCall.readAll(fd, count: 4, at: 10) == .success([]))
        #expect(SystemCall.readAll(-1, count: 4, at: 0) == .failure(.badFileDescriptor))
    }

    @Test func writeAllReportsTheErrnoOfTheWriteThatFailed() throws {
        var ends: [CInt] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let bytes = [UInt8](repeating: 7, count: 1000)
        guard case .success = SystemCall.writeAll(ends[1], bytes) else {
            Issue.record("a write into an empty pipe failed")
            return
        }
        close(ends[1])
        var received = [UInt8](repeating: 0, count: 2000)
        #expect(read(ends[0], &received, received.count) == 1000)

        let full = open("/dev/full", O_WRONLY | O_CLOEXEC)
        try #require(full >= 0)
        defer { close(full) }
        guard case .failure(let code) = SystemCall.writeAll(full, bytes) else {
            Issue.record("a write to /dev/full succeeded")
            return
        }
        #expect(code == .noSpace)
    }

    @Test func readsAreBoundedAndOnlyOfRegularFiles() throws {
        let path = "/tmp/portcullis-read-\(UUID().uuidString.prefix(8))"
        try Data(repeating: 65, count: 1000).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        #expect(try readWholeFile(path, maximumBytes: 1000).count == 1000)
        #expect(throws: FileReadError.self) { try readWholeFile(path, maximumBytes: 999) }
        do {
            _ = try readWholeFile("/dev/null", maximumBytes: 10)
            Issue.record("a device was read")
        } catch {
            #expect(error.description == "/dev/null is not a regular file (give a file, or - for standard input)")
        }
        #expect(SystemCall.parent(of: "/run/portcullis/control.sock") == "/run/portcullis")
        #expect(SystemCall.parent(of: "control.sock") == nil)
    }
}
