import ImageFormats

func runMeasure(_ args: [String]) throws -> Int32 {
    printError("measure: not implemented yet")
    return 1
}
