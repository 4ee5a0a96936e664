import XCTest
@testable import ImageFormats

final class JSONValueTests: XCTestCase {
    func testPrettyMatchesQemuShape() {
        let v = JSONValue.object([("a", .int(1)), ("b", .array([])), ("c", .object([("d", .string("o ü/x"))]))])
        XCTAssertEqual(v.pretty(), "{\n    \"a\": 1,\n    \"b\": [\n    ],\n    \"c\": {\n        \"d\": \"o \\u00FCx\"\n    }\n}".replacingOccurrences(of: "\\u00FCx", with: "\\u00FC/x"))
        XCTAssertEqual(v.compact(), "{\"a\": 1, \"b\": [], \"c\": {\"d\": \"o \\u00FC/x\"}}")
    }

    func testParseRoundTripAndDepthLimit() throws {
        let v = try JSONValue.parse(#"{"driver": "qcow2", "file": {"driver": "file", "filename": "a\u00fc.img"}, "n": -5, "f": 1.5}"#)
        XCTAssertEqual(v["file"]?["filename"]?.stringValue, "aü.img")
        XCTAssertEqual(v["n"]?.int64Value, -5)
        XCTAssertThrowsError(try JSONValue.parse(String(repeating: "[", count: 5000)))
        XCTAssertThrowsError(try JSONValue.parse("{\"a\": 1} x"))
    }
}
