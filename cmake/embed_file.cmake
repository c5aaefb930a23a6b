# Writes a C++ source that holds the bytes of IN as paygent::internal::kEmbeddedPrices.
file(READ ${IN} content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
file(WRITE ${OUT} "// Generated from meter/prices.json by cmake/embed_file.cmake. Do not edit.\n"
  "#include <string_view>\nnamespace paygent::internal {\n"
  "static const char kBytes[] = {${bytes} 0};\n"
  "extern const std::string_view kEmbeddedPrices{kBytes, sizeof(kBytes) - 1};\n}\n")
