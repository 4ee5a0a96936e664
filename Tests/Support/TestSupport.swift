// Helpers shared by the test targets (ImageFormatsTests, imgtoolTests, nbdserverTests): temporary directories,
// running programs and the QEMU oracles, skipping when they are missing, byte comparisons, TLS
// credentials.
import Foundation
import XCTest

public struct ProcessResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a program (PATH lookup unless the path is absolute) to completion and captures its output;
/// with a `timeout` the program is terminated when it runs longer.
@discardableResult
public func runProcess(_ program: String, _ args: [String], cwd: String? = nil, stdin: String? = nil,
                       env: [String: String]? = nil, timeout: TimeInterval? = nil) throws -> ProcessResult {
    let p = Process()
    setProgram(of: p, program, args)
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    if let env { p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
    let out = Pipe(), err = Pipe(), inPipe = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inPipe
    try p.run()
    if let stdin { inPipe.fileHandleForWriting.write(stdin.data(using: .utf8)!) }
    try? inPipe.fileHandleForWriting.close()
    // Read both pipes concurrently so a chatty child cannot block on a full pipe.
    final class Box: @unchecked Sendable { var data = Data() }
    let errBox = Box()
    let group = DispatchGroup()
    group.enter()
    let errHandle = err.fileHandleForReading
    DispatchQueue.global().async {
        errBox.data = errHandle.readDataToEndOfFile()
        group.leave()
    }
    let killer = DispatchWorkItem { if p.isRunning { p.terminate() } }
    if let timeout { DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer) }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    killer.cancel()
    return ProcessResult(status: p.terminationStatus,
                         stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errBox.data, as: UTF8.self))
}

/// Points `p` at `program` with `args`: an absolute path as it is, anything else looked up in PATH.
public func setProgram(of p: Process, _ program: String, _ args: [String]) {
    if program.hasPrefix("/") {
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
    } else {
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [program] + args
    }
}

public func which(_ program: String) -> Bool {
    (try? runProcess("which", [program]).status) == 0
}

/// Skips the test unless the QEMU tools are installed (CI installs them; a skip there is a bug).
public func requireQemuImg() throws {
    try XCTSkipUnless(which("qemu-img"), "qemu-img (Debian qemu-utils) is not installed")
}

/// A fresh temporary directory, removed at the end of the test. Its path is short (/tmp/vmtk-UUID),
/// so that Unix sockets inside it stay under the 107-byte limit.
public final class TempDir {
    public let path: String
    public init() {
        let base = URL(fileURLWithPath: "/tmp").appendingPathComponent("vmtk-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        path = base.path
    }
    public func file(_ name: String) -> String { path + "/" + name }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Deterministic pseudo-random bytes (a simple xorshift), for incompressible test data.
public func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        var v = x
        for _ in 0..<8 where i < count {
            out[i] = UInt8(truncatingIfNeeded: v)
            v >>= 8
            i += 1
        }
    }
    return out
}

/// Compares byte arrays without dumping them: reports the first differing offset.
public func assertSameBytes(_ a: [UInt8], _ b: [UInt8], _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    if a.count != b.count {
        XCTFail("length \(a.count) != \(b.count) \(message)", file: file, line: line)
        return
    }
    if let i = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
        XCTFail("bytes differ at offset \(i) (\(a[i]) != \(b[i])) \(message)", file: file, line: line)
    }
}

/// TLS credentials in QEMU's directory layout, made with GnuTLS's certtool and psktool (the caller
/// checks that they are installed): a CA, a server certificate for localhost/127.0.0.1, a client
/// certificate, their keys, and keys.psk with `pskUsers`. Returns the directory.
public func makeTestPKI(in dir: TempDir, pskUsers: [String]) throws -> String {
    let pki = dir.file("pki")
    try FileManager.default.createDirectory(atPath: pki, withIntermediateDirectories: true)
    let templates = [
        "ca.info": "cn = Test CA\nca\ncert_signing_key\nexpiration_days = 3650\n",
        "server.info": "organization = Test\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n"
            + "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 3650\n",
        "client.info": "country = GB\norganization = Test\ncn = client\ntls_www_client\nencryption_key\nsigning_key\n"
            + "expiration_days = 3650\n",
    ]
    for (name, text) in templates { try text.write(toFile: "\(pki)/\(name)", atomically: true, encoding: .utf8) }
    let steps: [[String]] = [
        ["--generate-privkey", "--outfile", "\(pki)/ca-key.pem"],
        ["--generate-self-signed", "--load-privkey", "\(pki)/ca-key.pem", "--template", "\(pki)/ca.info", "--outfile", "\(pki)/ca-cert.pem"],
        ["--generate-privkey", "--outfile", "\(pki)/server-key.pem"],
        ["--generate-certificate", "--load-privkey", "\(pki)/server-key.pem", "--load-ca-certificate", "\(pki)/ca-cert.pem",
         "--load-ca-privkey", "\(pki)/ca-key.pem", "--template", "\(pki)/server.info", "--outfile", "\(pki)/server-cert.pem"],
        ["--generate-privkey", "--outfile", "\(pki)/client-key.pem"],
        ["--generate-certificate", "--load-privkey", "\(pki)/client-key.pem", "--load-ca-certificate", "\(pki)/ca-cert.pem",
         "--load-ca-privkey", "\(pki)/ca-key.pem", "--template", "\(pki)/client.info", "--outfile", "\(pki)/client-cert.pem"],
    ]
    for step in steps {
        let r = try runProcess("certtool", step)
        XCTAssertEqual(r.status, 0, r.stderr)
    }
    for user in pskUsers {
        XCTAssertEqual(try runProcess("psktool", ["-u", user, "-p", "\(pki)/keys.psk"]).status, 0)
    }
    return pki
}
