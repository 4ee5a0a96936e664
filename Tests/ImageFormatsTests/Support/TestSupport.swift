// The shared test helpers (Tests/Support), visible to every file of this target.
@_exported import TestSupport
