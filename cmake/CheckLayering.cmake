# moe_check_layering(FOLDERS dir... | FILES file... FORBIDDEN regex): fails the build when a source
# file under one of FOLDERS (or one of FILES, relative to the calling folder) includes a header
# matching FORBIDDEN. Include paths alone cannot enforce layering here
# (gRPC's headers live in /usr/include), so the check reads the #include lines themselves, on
# every build (it is cheap).
function(moe_check_layering)
  cmake_parse_arguments(ARG "" "FORBIDDEN" "FOLDERS;FILES" ${ARGN})
  set(paths ${ARG_FOLDERS})
  foreach(file ${ARG_FILES})
    list(APPEND paths ${CMAKE_CURRENT_SOURCE_DIR}/${file})
  endforeach()
  string(REPLACE ";" "," folders "${paths}")
  string(MD5 id "${folders}")
  string(SUBSTRING ${id} 0 8 id)
  add_custom_target(check_layering_${id} ALL
    COMMAND ${CMAKE_COMMAND} "-DFOLDERS=${folders}" "-DFORBIDDEN=${ARG_FORBIDDEN}"
            -P ${PROJECT_SOURCE_DIR}/cmake/check_layering_script.cmake
    COMMENT "Checking the layering of ${CMAKE_CURRENT_SOURCE_DIR}"
    VERBATIM)
endfunction()
