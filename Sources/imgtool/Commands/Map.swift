import ImageFormats

func runMap(_ args: [String]) throws -> Int32 {
    printError("map: not implemented yet")
    return 1
}
