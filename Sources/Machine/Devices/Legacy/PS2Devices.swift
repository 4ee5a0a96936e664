// The PS/2 keyboard and mouse behind the i8042, as QEMU's ps2.c presents them: an MF2 keyboard
// and a mouse that grows into an IntelliMouse (IMPS/2) or IntelliMouse Explorer (ImExPS/2) when
// the driver knocks with the sample-rate sequences, so Linux's atkbd and psmouse probe them as they
// probe QEMU's. Each answers the bytes the controller forwards with its replies (ACK 0xFA, RESEND
// 0xFE, reset 0xAA, IDs) in a small queue the controller drains one byte at a time.
//
// There is no display or host keyboard/mouse: no scancodes or movement packets are ever generated
// on their own (a mouse poll answers a packet with no movement and no buttons).

/// Replies queued by a PS/2 device; like QEMU's, at most 16 bytes wait (the rest are dropped).
struct PS2Queue: Sendable, Equatable {
    static let capacity = 16
    private(set) var bytes: [UInt8] = []
    var isEmpty: Bool { bytes.isEmpty }
    mutating func push(_ b: UInt8...) {
        for x in b where bytes.count < PS2Queue.capacity { bytes.append(x) }
    }
    mutating func pop() -> UInt8? { bytes.isEmpty ? nil : bytes.removeFirst() }
    mutating func clear() { bytes.removeAll() }
}

enum PS2 {
    static let ack: UInt8 = 0xFA
    static let resend: UInt8 = 0xFE
    static let selfTestPassed: UInt8 = 0xAA
}

struct PS2Keyboard: Sendable, Equatable {
    var queue = PS2Queue()
    /// A command waiting for its parameter byte (0xED LEDs, 0xF0 scancode set, 0xF3 rate, 0xFC).
    var pendingCommand: UInt8? = nil
    var scancodeSet: UInt8 = 2
    var scanning = true
    var leds: UInt8 = 0

    /// What GETID and "get scancode set" report while the controller translates to set 1.
    static let translatedSet: [UInt8] = [0xFF, 0x43, 0x41, 0x3F]

    mutating func reset() {
        scancodeSet = 2
        scanning = true
        leds = 0
        queue.clear()
    }

    /// A byte from the host; `translated` is the controller's translation bit (CTR bit 6).
    mutating func write(_ b: UInt8, translated: Bool) {
        queue.clear()   // a new command replaces whatever reply was still waiting
        if let cmd = pendingCommand {
            pendingCommand = nil
            switch cmd {
            case 0xF0:
                if b == 0 {
                    queue.push(PS2.ack, translated ? PS2Keyboard.translatedSet[Int(scancodeSet)] : scancodeSet)
                } else if (1...3).contains(b) {
                    scancodeSet = b
                    queue.push(PS2.ack)
                } else {
                    queue.push(PS2.resend)
                }
            case 0xED:
                leds = b & 0x07
                queue.push(PS2.ack)
            default:   // 0xF3 typematic rate/delay, 0xFC make/break per key
                queue.push(PS2.ack)
            }
            return
        }
        switch b {
        case 0x00: queue.push(PS2.ack)
        case 0x05: queue.push(PS2.resend)
        case 0xF2: queue.push(PS2.ack, 0xAB, translated ? 0x41 : 0x83)   // MF2 keyboard
        case 0xEE: queue.push(0xEE)                                      // echo
        case 0xF4:
            scanning = true
            queue.push(PS2.ack)
        case 0xED, 0xF0, 0xF3, 0xFC:
            pendingCommand = b
            queue.push(PS2.ack)
        case 0xF5, 0xF6:   // reset to defaults, scanning off / on
            reset()
            scanning = b == 0xF6
            queue.push(PS2.ack)
        case 0xFF:
            reset()
            queue.push(PS2.ack, PS2.selfTestPassed)
        case 0xFA: queue.push(PS2.ack)   // all keys typematic/make/break
        default: queue.push(PS2.resend)
        }
    }
}

struct PS2Mouse: Sendable, Equatable {
    var queue = PS2Queue()
    var pendingCommand: UInt8? = nil
    /// Status byte as GET_SCALE (0xE9) reports it: bit 6 remote mode, bit 5 enabled, bit 4 scaling 2:1.
    var status: UInt8 = 0
    var resolution: UInt8 = 2
    var sampleRate: UInt8 = 100
    /// Device ID: 0 standard, 3 IntelliMouse (after rates 200, 100, 80), 4 Explorer (200, 200, 80).
    var type: UInt8 = 0
    var detectState = 0
    var wrap = false

    static let remote: UInt8 = 0x40, enabled: UInt8 = 0x20, scale21: UInt8 = 0x10

    mutating func write(_ b: UInt8) {
        if let cmd = pendingCommand {
            pendingCommand = nil
            if cmd == 0xF3 {
                sampleRate = b
                detect(rate: b)
            } else {   // 0xE8
                resolution = b
            }
            queue.push(PS2.ack)
            return
        }
        if wrap {
            if b == 0xEC {   // reset wrap mode
                wrap = false
                queue.push(PS2.ack)
                return
            }
            if b != 0xFF {
                queue.push(b)
                return
            }
        }
        switch b {
        case 0xE6: status &= ~PS2Mouse.scale21; queue.push(PS2.ack)
        case 0xE7: status |= PS2Mouse.scale21; queue.push(PS2.ack)
        case 0xEA: status &= ~PS2Mouse.remote; queue.push(PS2.ack)
        case 0xEE: wrap = true; queue.push(PS2.ack)
        case 0xF0: status |= PS2Mouse.remote; queue.push(PS2.ack)
        case 0xF2: queue.push(PS2.ack, type)
        case 0xE8, 0xF3:
            pendingCommand = b
            queue.push(PS2.ack)
        case 0xE9: queue.push(PS2.ack, status, resolution, sampleRate)
        case 0xEB:   // read data: one packet, nothing moved
            queue.push(PS2.ack)
            queue.push(0x08, 0, 0)
            if type == 3 || type == 4 { queue.push(0) }
        case 0xF4: status |= PS2Mouse.enabled; queue.push(PS2.ack)
        case 0xF5: status &= ~PS2Mouse.enabled; queue.push(PS2.ack)
        case 0xF6:
            setDefaults()
            queue.push(PS2.ack)
        case 0xFF:
            setDefaults()
            type = 0
            queue.clear()
            queue.push(PS2.ack, PS2.selfTestPassed, type)
        default: break   // QEMU's mouse ignores other bytes without a reply
        }
    }

    private mutating func setDefaults() {
        sampleRate = 100
        resolution = 2
        status = 0
    }

    /// The IntelliMouse knock sequences: 200, 100, 80 and 200, 200, 80.
    private mutating func detect(rate: UInt8) {
        switch detectState {
        case 1: detectState = rate == 100 ? 2 : rate == 200 ? 3 : 0
        case 2:
            if rate == 80 { type = 3 }
            detectState = 0
        case 3:
            if rate == 80 { type = 4 }
            detectState = 0
        default: detectState = rate == 200 ? 1 : 0
        }
    }
}
