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
