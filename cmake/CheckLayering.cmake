# moe_check_layering(FOLDERS dir... FORBIDDEN regex): fails the build when a source file under one
# of FOLDERS includes a header matching FORBIDDEN. Include paths alone cannot enforce layering here
# (gRPC's headers live in /usr/include), so the check reads the #include lines themselves, on
# every build (it is cheap).
function(moe_check_layering)
  cmake_parse_arguments(ARG "" "FORBIDDEN" "FOLDERS" ${ARGN})
  string(REPLACE ";" "," folders "${ARG_FOLDERS}")
  string(MD5 id "${folders}")
  string(SUBSTRING ${id} 0 8 id)
  add_custom_target(check_layering_${id} ALL
    COMMAND ${CMAKE_COMMAND} "-DFOLDERS=${folders}" "-DFORBIDDEN=${ARG_FORBIDDEN}"
            -P ${PROJECT_SOURCE_DIR}/cmake/check_layering_script.cmake
    COMMENT "Checking that ${ARG_FOLDERS} include nothing matching ${ARG_FORBIDDEN}"
    VERBATIM)
endfunction()
