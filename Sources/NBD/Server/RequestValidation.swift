// Checking a request before anything is done about it (nbdkit's validate_request, QEMU's
// nbd_co_receive_request): a pure function of the header and the session.
//
// The answer says what to do with the payload (read it, drop it, or leave it, which forces a
// disconnect after the reply), and either "go ahead" or the error to send. Every refusal is
// NBD_EINVAL with QEMU's message, as qemu-nbd does; nothing here allocates, so a hostile length
// costs nothing until it has passed every check.

public struct RequestCheck: Equatable, Sendable {
    public enum Payload: Equatable, Sendable {
        case none
        /// Read this many bytes into the data buffer (a write that passed every check).
        case read(Int)
        /// Read and throw away this many bytes (a payload we will not use).
        case drop(UInt64)
        /// The payload cannot be consumed (too big): reply, then disconnect.
        case unreadable
    }

    public enum Verdict: Equatable, Sendable {
        /// NBD_CMD_DISC: close without a reply.
        case disconnect
        case proceed
        /// Send this error (errno, message), then go on (or disconnect when the payload is unreadable).
        case refuse(Int32, String)
    }

    public var payload: Payload
    public var verdict: Verdict
    /// The request's length after dropping a payload that is not an effect length.
    public var effectLength: UInt64

    /// QEMU's checks, in QEMU's order: length limit, read-only, bounds, flags.
    public static func check(_ r: NBDRequest, mode: NBDMode, exportSize: UInt64, readOnly: Bool) -> RequestCheck {
        let einval: Int32 = 22
        let extendedPayload = mode == .extended && r.flags.contains(.payloadLength)
        var payloadLength: UInt64 = extendedPayload ? r.length : 0
        var checkLength = extendedPayload
        var payloadUsed = false
        var writesData = false
        var valid: NBDCommandFlags = [.fua]

        switch r.command {
        case .disconnect:
            return RequestCheck(payload: .none, verdict: .disconnect, effectLength: 0)
        case .read:
            if mode >= .structured { valid.insert(.dontFragment) }
            checkLength = true
        case .write:
            if mode == .extended { valid.insert(.payloadLength) }
            payloadUsed = true
            payloadLength = r.length
            checkLength = true
            writesData = true
        case .trim, .writeZeroes:
            if r.command == .writeZeroes { valid.formUnion([.noHole, .fastZero]) }
            writesData = true
        case .cache:
            checkLength = true
        case .blockStatus:
            valid.insert(.reqOne)
        default:
            break
        }

        if checkLength && r.length > UInt64(NBDLimits.maxBuffer) {
            let msg = "len (\(r.length) ) is larger than max len (\(NBDLimits.maxBuffer))"
            return RequestCheck(payload: payloadLength > 0 ? .unreadable : .none, verdict: .refuse(einval, msg),
                                effectLength: r.length)
        }
        var effect = r.length
        var payload: Payload = .none
        if payloadLength > 0 {
            if payloadUsed {
                payload = .read(Int(payloadLength))
            } else {
                payload = .drop(payloadLength)
                effect = 0
            }
        }
        func refuse(_ msg: String) -> RequestCheck {
            // A refused write's data is dropped unread into any buffer.
            let p: Payload
            if case .read(let n) = payload { p = .drop(UInt64(n)) } else { p = payload }
            return RequestCheck(payload: p, verdict: .refuse(einval, msg), effectLength: effect)
        }
        if readOnly && writesData {
            return refuse("Export is read-only")
        }
        if r.offset > exportSize || effect > exportSize - r.offset {
            return refuse("operation past EOF; From: \(r.offset), Len: \(effect), Size: \(exportSize)")
        }
        if !r.flags.subtracting(valid).isEmpty {
            return refuse("unsupported flags for command \(r.command) (got 0x\(String(r.flags.rawValue, radix: 16)))")
        }
        return RequestCheck(payload: payload, verdict: .proceed, effectLength: effect)
    }
}
