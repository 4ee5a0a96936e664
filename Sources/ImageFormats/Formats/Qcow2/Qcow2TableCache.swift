// A bounded write-back cache of cluster-sized metadata tables (L2 tables, refcount blocks).
//
// Tables are kept as raw big-endian bytes and decoded on access (an L2 lookup is one 8-byte load).
// Dirty tables are written back on flush or eviction; `beforeWriteback` lets the L2 cache flush
// the refcount cache first, so that an L2 entry never reaches the disk before the refcount that
// makes its cluster allocated (a crash then leaks clusters at worst, never corrupts).
// Not thread-safe: the owning Qcow2Meta's lock guards it.

final class Qcow2TableCache {
    struct Entry {
        var data: [UInt8]
        var dirty: Bool
        var lastUse: UInt64
    }

    private(set) var entries: [UInt64: Entry] = [:]
    let capacity: Int
    let tableSize: Int
    let name: String
    private var tick: UInt64 = 0
    private let file: any BlockNode
    /// Runs before any dirty table of this cache is written (dependency on another cache).
    var beforeWriteback: (() throws -> Void)?

    init(file: any BlockNode, tableSize: Int, capacity: Int, name: String) {
        self.file = file
        self.tableSize = tableSize
        self.capacity = max(2, capacity)
        self.name = name
    }

    /// Makes sure the table at `offset` is cached (reading it if needed) and returns nothing; use
    /// `read` / `update` to access it. Evicts the least recently used table when full.
    private func load(_ offset: UInt64) throws {
        tick += 1
        if entries[offset] != nil {
            entries[offset]!.lastUse = tick
            return
        }
        try makeRoom()
        let data = try file.read(at: offset, count: tableSize)
        entries[offset] = Entry(data: data, dirty: false, lastUse: tick)
    }

    /// Reads a value from the table at `offset`.
    func read<T>(_ offset: UInt64, _ body: ([UInt8]) throws -> T) throws -> T {
        try load(offset)
        return try body(entries[offset]!.data)
    }

    /// Changes the table at `offset` in place and marks it dirty.
    func update<T>(_ offset: UInt64, _ body: (inout [UInt8]) throws -> T) throws -> T {
        try load(offset)
        entries[offset]!.dirty = true
        return try body(&entries[offset]!.data)
    }

    /// Installs a new table (not read from disk) at `offset`, dirty.
    func installEmpty(_ offset: UInt64, contents: [UInt8]? = nil) throws {
        tick += 1
        if entries[offset] == nil { try makeRoom() }
        entries[offset] = Entry(data: contents ?? [UInt8](repeating: 0, count: tableSize), dirty: true, lastUse: tick)
    }

    /// Forgets a table whose cluster was freed (its contents must not be written back).
    func discard(_ offset: UInt64) {
        entries[offset] = nil
    }

    func contains(_ offset: UInt64) -> Bool { entries[offset] != nil }

    var hasDirty: Bool { entries.values.contains { $0.dirty } }

    /// Writes every dirty table, in offset order.
    func flush() throws {
        let dirty = entries.filter { $0.value.dirty }.keys.sorted()
        guard !dirty.isEmpty else { return }
        try beforeWriteback?()
        for off in dirty {
            try entries[off]!.data.withUnsafeBytes { try file.write(at: off, from: $0, flags: []) }
            entries[off]!.dirty = false
        }
    }

    /// Writes one table now if it is dirty.
    func writeBack(_ offset: UInt64) throws {
        guard let e = entries[offset], e.dirty else { return }
        try beforeWriteback?()
        try e.data.withUnsafeBytes { try file.write(at: offset, from: $0, flags: []) }
        entries[offset]!.dirty = false
    }

    /// Drops everything (after flush), e.g. when switching to a snapshot's tables.
    func clear() { entries.removeAll() }

    private func makeRoom() throws {
        guard entries.count >= capacity else { return }
        // Evict the least recently used; write it back first if dirty.
        guard let victim = entries.min(by: { $0.value.lastUse < $1.value.lastUse })?.key else { return }
        if entries[victim]!.dirty {
            try beforeWriteback?()
            try entries[victim]!.data.withUnsafeBytes { try file.write(at: victim, from: $0, flags: []) }
        }
        entries[victim] = nil
    }
}
