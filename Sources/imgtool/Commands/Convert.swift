import ImageFormats

func runConvert(_ args: [String]) throws -> Int32 {
    printError("convert: not implemented yet")
    return 1
}
