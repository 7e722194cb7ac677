# ql_add_plugin(NAME SOURCES src... [LINK_LIBRARIES lib...] [OUTPUT_DIRECTORY dir] [NO_INSTALL])
#
# Builds a QuantLab plugin as a MODULE library NAME.so with the flags every plugin must have:
# hidden visibility with only `ql_plugin_v1` exported, -z defs (no undefined symbols left to
# chance), -z nodelete (never unmapped), LibTorch linked dynamically through the SDK.
# The target is called ql_plugin_NAME.
set(_QL_PLUGIN_VERSION_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/plugin.version")

function(ql_add_plugin name)
  cmake_parse_arguments(ARG "NO_INSTALL" "OUTPUT_DIRECTORY" "SOURCES;LINK_LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "ql_add_plugin(${name}): SOURCES is required")
  endif()
  if(NOT name MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "ql_add_plugin(${name}): the name must look like a C identifier")
  endif()
  set(target ql_plugin_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  if(TARGET qlsdk)
    target_link_libraries(${target} PRIVATE qlsdk ${ARG_LINK_LIBRARIES})
  else()
    target_link_libraries(${target} PRIVATE QuantLab::qlsdk ${ARG_LINK_LIBRARIES})
  endif()
  target_compile_features(${target} PRIVATE cxx_std_17)
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra>")
  target_link_options(${target} PRIVATE
    -Wl,-z,nodelete -Wl,--version-script=${_QL_PLUGIN_VERSION_SCRIPT})
  # Every symbol resolved at link time, except in fuzzing builds, whose coverage hooks live in
  # the fuzzer executable.
  if(NOT QL_FUZZ)
    target_link_options(${target} PRIVATE -Wl,-z,defs)
  endif()
  if(NOT ARG_OUTPUT_DIRECTORY)
    if(DEFINED QL_BUILD_PLUGIN_DIR)
      set(ARG_OUTPUT_DIRECTORY ${QL_BUILD_PLUGIN_DIR})
    else()
      set(ARG_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
    endif()
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${name}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY}
    LINK_DEPENDS ${_QL_PLUGIN_VERSION_SCRIPT}
    # Installed at <prefix>/lib/quantlab/plugins: the SDK library is two levels up.
    INSTALL_RPATH "$ORIGIN/../..")
  if(NOT ARG_NO_INSTALL AND DEFINED QL_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${QL_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
