# Writes OUT, a C++ source that holds each file of FILES (a |-separated list of names in DIR) as an
# entry of paygent::server::dashboard_assets() (server/dashboard_assets.h).
string(REPLACE "|" ";" files "${FILES}")
set(arrays "")
set(entries "")
set(i 0)
foreach(f IN LISTS files)
  file(READ ${DIR}/${f} content HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
  string(APPEND arrays "const unsigned char k${i}[] = {${bytes} 0};\n")
  string(APPEND entries "    {\"${f}\", std::string_view(reinterpret_cast<const char*>(k${i}), sizeof(k${i}) - 1)},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE ${OUT} "// Generated from server/dashboard/ by cmake/embed_assets.cmake. Do not edit.\n"
  "#include \"server/dashboard_assets.h\"\nnamespace paygent::server {\nnamespace {\n${arrays}"
  "const DashboardAsset kAssets[] = {\n${entries}};\n}  // namespace\n"
  "std::span<const DashboardAsset> dashboard_assets() { return kAssets; }\n}  // namespace paygent::server\n")
