import Foundation
import Glibc
import Testing

/// A private PostgreSQL cluster of Debian's PostgreSQL 15: initdb in a temporary directory as the
/// postgres user, a Unix socket there and a loopback port, passwords (SCRAM) over TCP. Stopped
/// and removed when the test ends, pass or fail.
final class PostgresServer {
    static let binaries = "/usr/lib/postgresql/15/bin"
    static var isAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: "\(binaries)/initdb") && getpwnam("postgres") != nil
    }
    static let reason: Comment = "needs root and Debian's postgresql (PostgreSQL 15 and its postgres user; tools/setup.sh installs it)"

    let directory: String
    let port: Int
    var data: String { "\(directory)/data" }
    /// With TLS: the CA that signed the server's certificate (for 127.0.0.1 and localhost), and
    /// another CA that signed nothing the server has.
    var certificateAuthority: String { "\(directory)/tls/ca.crt" }
    var otherCertificateAuthority: String { "\(directory)/tls/other-ca.crt" }

    /// With `tls`, the server takes TCP connections over TLS only (pg_hba rejects the others).
    init(tls: Bool = false) throws {
        directory = "/tmp/portcullis-pg-\(UUID().uuidString.prefix(8).lowercased())"
        port = unusedLoopbackPort()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard let user = getpwnam("postgres") else { throw LabError("no postgres user") }
        chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
        chmod(directory, 0o700)
        let initdb = try asPostgres("\(Self.binaries)/initdb", ["-D", data, "-U", "postgres", "--auth-local=trust",
                                                                 "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
        try #require(initdb.status == 0, "initdb failed: \(initdb)")
        let settings = """
            listen_addresses = '127.0.0.1'
            port = \(port)
            unix_socket_directories = '\(directory)'
            fsync = off
            max_connections = 40
            shared_buffers = 32MB
            log_min_messages = warning
            """
        var tlsSettings = ""
        if tls {
            try makeCertificates(owner: user.pointee)
            tlsSettings = """
                ssl = on
                ssl_cert_file = '\(directory)/tls/server.crt'
                ssl_key_file = '\(directory)/tls/server.key'
                """
            let hba = "\(data)/pg_hba.conf"
            let rules = (try? String(contentsOfFile: hba, encoding: .utf8)) ?? ""
            // The first matching line decides: plain TCP is refused before the default host lines.
            try ("hostnossl all all 127.0.0.1/32 reject\nhostnossl all all ::1/128 reject\n" + rules)
                .write(toFile: hba, atomically: true, encoding: .utf8)
        }
        let file = "\(data)/postgresql.conf"
        let existing = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        try (existing + "\n" + settings + "\n" + tlsSettings + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        try start()
    }

    deinit {
        _ = try? asPostgres("\(Self.binaries)/pg_ctl", ["-D", data, "-m", "immediate", "-w", "-t", "10", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A test CA, a server certificate it signs, and a second CA, with openssl.
    private func makeCertificates(owner: passwd) throws {
        let tls = "\(directory)/tls"
        try FileManager.default.createDirectory(atPath: tls, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(toFile: "\(tls)/server.ext", atomically: true, encoding: .utf8)
        for arguments in [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(tls)/ca.key", "-out", "\(tls)/ca.crt", "-days", "2",
             "-subj", "/CN=Portcullis test CA"],
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(tls)/other-ca.key", "-out", "\(tls)/other-ca.crt",
             "-days", "2", "-subj", "/CN=Another CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(tls)/server.key", "-out", "\(tls)/server.csr", "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "\(tls)/server.csr", "-CA", "\(tls)/ca.crt", "-CAkey", "\(tls)/ca.key", "-CAcreateserial",
             "-out", "\(tls)/server.crt", "-days", "2", "-extfile", "\(tls)/server.ext"],
        ] {
            let made = try Command.run("/usr/bin/openssl", arguments, timeout: 30)
            try #require(made.status == 0, "openssl \(arguments[0]) failed: \(made)")
        }
        for file in ["server.key", "server.crt"] { chown("\(tls)/\(file)", owner.pw_uid, owner.pw_gid) }
        chmod("\(tls)/server.key", 0o600)
        chown(tls, owner.pw_uid, owner.pw_gid)
    }

    func start() throws {
        // The server outlives pg_ctl and keeps every descriptor it inherits, Foundation's child
        // watch among them, which would make this wait until the server stops: bash closes all
        // but the standard three before pg_ctl starts.
        let closingOthers = "for f in /proc/$$/fd/*; do f=${f##*/}; ((f > 2)) && eval \"exec $f>&-\" 2>/dev/null; done; exec \"$@\""
        let started = try Command.run("/bin/bash", ["-c", closingOthers, "bash", "/usr/sbin/runuser", "-u", "postgres", "--",
                                                    "\(Self.binaries)/pg_ctl", "-D", data, "-l", "\(directory)/server.log", "-w", "-t", "20", "start"],
                                      timeout: 60)
        try #require(started.status == 0, "pg_ctl start failed: \(started)\n\((try? String(contentsOfFile: "\(directory)/server.log", encoding: .utf8)) ?? "")")
    }

    /// Stops at once, as a crash or a lost network would: connections are cut.
    func stop() throws {
        let stopped = try asPostgres("\(Self.binaries)/pg_ctl", ["-D", data, "-m", "immediate", "-w", "-t", "20", "stop"])
        try #require(stopped.status == 0, "pg_ctl stop failed: \(stopped)")
    }

    /// psql as the superuser over the socket; the output unaligned, without headers.
    @discardableResult
    func sql(_ statements: String, database: String = "postgres") throws -> String {
        let result = try asPostgres("/usr/bin/psql", ["-h", directory, "-p", String(port), "-d", database, "-X", "-q", "-A", "-t",
                                                      "-v", "ON_ERROR_STOP=1", "-c", statements])
        guard result.status == 0 else { throw LabError("psql failed: \(result)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func asPostgres(_ program: String, _ arguments: [String]) throws -> Result {
        try Command.run("/usr/sbin/runuser", ["-u", "postgres", "--", program] + arguments, timeout: 60)
    }
}
