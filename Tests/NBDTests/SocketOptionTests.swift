// Options the server sets on accepted connections.
import Glibc
import XCTest
@testable import NBD

final class SocketOptionTests: XCTestCase {
    private func option(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        XCTAssertEqual(getsockopt(fd, level, name, &v, &len), 0)
        return v
    }

    /// A Unix connection gets a send buffer that holds a whole 256 KiB read reply (1 MiB asked,
    /// doubled by Linux, within net.core.wmem_max); a TCP one gets TCP_NODELAY (and keeps the kernel's
    /// send buffer autotuning, which moves its size on its own).
    func testSendBufferOfAcceptedConnections() throws {
        let path = "/tmp/nbd-sockopt-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let unixListener = try XCTUnwrap(Sockets.listen(.unix(path: path), backlog: 4).first)
        defer { close(unixListener) }
        let client = try Sockets.connect(.unix(path: path))
        defer { close(client) }
        let server = try XCTUnwrap(Sockets.accept(unixListener))
        defer { close(server) }
        let wmemMax = Int32((try? String(contentsOfFile: "/proc/sys/net/core/wmem_max", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 212992
        XCTAssertEqual(option(server, SOL_SOCKET, SO_SNDBUF), 2 * min(1 << 20, wmemMax))
        XCTAssertGreaterThan(option(server, SOL_SOCKET, SO_SNDBUF), 256 << 10)

        let tcpListener = try XCTUnwrap(Sockets.listen(.inet(host: "127.0.0.1", port: "0"), backlog: 4).first)
        defer { close(tcpListener) }
        let port = try XCTUnwrap(Sockets.localPort(tcpListener))
        let tcpClient = try Sockets.connect(.inet(host: "127.0.0.1", port: "\(port)"))
        defer { close(tcpClient) }
        let tcpServer = try XCTUnwrap(Sockets.accept(tcpListener))
        defer { close(tcpServer) }
        XCTAssertEqual(option(tcpServer, Int32(IPPROTO_TCP), TCP_NODELAY), 1)
    }
}
