# Packaging (issue 13): what `cmake --install` adds beyond the CMake package config (top-level
# CMakeLists.txt) — shared library versions, paygent.pc for pkg-config, paygentd's systemd unit and
# env file — and the .deb that `cpack -G DEB` builds from the same install. Included at the end of
# the top-level CMakeLists.txt, once every target exists.

set(PAYGENT_INSTALLED_LIBRARIES paygent paygent_plan paygent_meter paygent_event paygent_decimal)

# BUILD_SHARED_LIBS=ON builds the five installed libraries as shared objects. 0.x: a minor release
# may change the ABI (as SameMinorVersion says for the API), so the soname carries major.minor:
# libpaygent.so.0.1 -> libpaygent.so.0.1.0.
if(BUILD_SHARED_LIBS)
  set_target_properties(${PAYGENT_INSTALLED_LIBRARIES} PROPERTIES
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
    # Each finds the others beside it: a consumer's RUNPATH serves its own NEEDED entries only.
    INSTALL_RPATH "$ORIGIN")
  # Installed commands find the installed libraries beside them, whatever the prefix.
  foreach(command paygent_cli paygentd)
    if(TARGET ${command})
      set_target_properties(${command} PROPERTIES INSTALL_RPATH "$ORIGIN/../lib")
    endif()
  endforeach()
endif()

# paygent.pc. The public headers use these abseil libraries (Requires). The rest is what the
# library's own objects use: needed by every link of the static libraries, by none of the shared
# ones (Requires.private). Boost.Asio/Beast (sync/) are header-only and compiled in; OpenSSL and
# libpq are paygentd's alone. -pthread: Asio's threads.
set(PC_REQUIRES "absl_status absl_statusor absl_strings absl_time absl_synchronization absl_flat_hash_map")
set(PC_REQUIRES_PRIVATE "simdjson sqlite3 absl_hash absl_str_format absl_random_random")
set(PC_LIBS_PRIVATE "-pthread")
if(NOT BUILD_SHARED_LIBS)
  # A static library has no private dependencies: plain `pkg-config --libs` must list them.
  string(APPEND PC_REQUIRES " ${PC_REQUIRES_PRIVATE}")
  set(PC_LIBS "${PC_LIBS_PRIVATE}")
  set(PC_REQUIRES_PRIVATE "")
  set(PC_LIBS_PRIVATE "")
endif()
set(PC_LIBDIR lib)
set(PC_INCLUDEDIR include)
# The prefix is only known at install time (`cmake --install --prefix`, cpack's /usr): left as
# @PC_PREFIX@ here, filled by cmake/install_configured.cmake.
set(PC_PREFIX "@PC_PREFIX@")
configure_file(${PROJECT_SOURCE_DIR}/packaging/paygent.pc.in ${PROJECT_BINARY_DIR}/packaging/paygent.pc.in @ONLY)

# paygentd's systemd unit and env file, with the paths of the prefix installed to.
# (paygent-proxy, proxy/: its own install(TARGETS ... RUNTIME DESTINATION bin) puts it beside
# paygent and paygentd in bin/, and so in the .deb.)
if(TARGET paygentd)
  set(PAYGENT_INSTALL_SERVICE ON)
else()
  set(PAYGENT_INSTALL_SERVICE OFF)
endif()
install(CODE "
  set(PAYGENT_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(PAYGENT_BINARY_DIR \"${PROJECT_BINARY_DIR}\")
  set(PAYGENT_INSTALL_SERVICE ${PAYGENT_INSTALL_SERVICE})")
install(SCRIPT ${PROJECT_SOURCE_DIR}/cmake/install_configured.cmake)

# The .deb: `cpack -G DEB` in the build directory (after building everything), or
# `cmake --build build --target package`. One package, `paygent`: the commands, the unit, the
# libraries and headers. Depends: computed by dpkg-shlibdeps, plus adduser for the postinst.
set(CPACK_PACKAGE_NAME paygent)
set(CPACK_PACKAGE_VENDOR "Paygent")
set(CPACK_PACKAGE_CONTACT "Paygent maintainers <maintainers@paygent.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Runtime cost guardrail for LLM calls, and its backend paygentd")
set(CPACK_PACKAGE_DESCRIPTION "Paygent gates and meters LLM calls inside an application (a C++20 library, \
the paygent command) and keeps usage, budgets and billing in paygentd, an HTTP backend on SQLite or \
PostgreSQL, installed here as a systemd service.")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql (>= 15)")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/postinst ${PROJECT_SOURCE_DIR}/packaging/prerm
  ${PROJECT_SOURCE_DIR}/packaging/postrm ${PROJECT_SOURCE_DIR}/packaging/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
