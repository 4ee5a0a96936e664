import ImageFormats

func runCompare(_ args: [String]) throws -> Int32 {
    printError("compare: not implemented yet")
    return 1
}
