# Runs at install time (install(SCRIPT) in cmake/packaging.cmake), when CMAKE_INSTALL_PREFIX is the
# prefix really installed to (`cmake --install --prefix P`, or /usr under cpack): fills that prefix
# into paygent.pc and paygentd's unit and installs them with paygentd's env file.
# Inputs: PAYGENT_SOURCE_DIR, PAYGENT_BINARY_DIR, PAYGENT_INSTALL_SERVICE.
set(PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(configured "${PAYGENT_BINARY_DIR}/packaging/installed")
configure_file("${PAYGENT_BINARY_DIR}/packaging/paygent.pc.in" "${configured}/paygent.pc" @ONLY)
file(INSTALL "${configured}/paygent.pc" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/pkgconfig")

if(PAYGENT_INSTALL_SERVICE)
  # As GNUInstallDirs does: /usr's configuration is in /etc, any other prefix's in PREFIX/etc.
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(sysconfdir "/etc")
  else()
    set(sysconfdir "${CMAKE_INSTALL_PREFIX}/etc")
  endif()
  set(PAYGENTD_BIN "${CMAKE_INSTALL_PREFIX}/bin/paygentd")
  set(PAYGENTD_ENV_FILE "${sysconfdir}/default/paygentd")
  configure_file("${PAYGENT_SOURCE_DIR}/packaging/paygentd.service.in" "${configured}/paygentd.service" @ONLY)
  file(INSTALL "${configured}/paygentd.service" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
  # Never over an operator's settings (it holds the admin token); dpkg keeps it as a conffile.
  if(EXISTS "$ENV{DESTDIR}${PAYGENTD_ENV_FILE}")
    message(STATUS "Keeping: $ENV{DESTDIR}${PAYGENTD_ENV_FILE}")
  else()
    file(INSTALL "${PAYGENT_SOURCE_DIR}/packaging/paygentd.default" DESTINATION "${sysconfdir}/default"
         RENAME paygentd FILE_PERMISSIONS OWNER_READ OWNER_WRITE)
  endif()
endif()
