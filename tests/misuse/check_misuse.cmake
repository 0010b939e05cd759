# cmake -DCXX=<compiler> -DINCLUDE=<dir> -DSOURCE=misuse.cpp -DCASE=<n> [-DEXPECT=<text>] -P check_misuse.cmake
#
# Compiles one case of misuse.cpp with -fsyntax-only. CASE 0 (the valid calls) must compile
# without warnings. Every other case must fail, and the first line of the compiler's output
# that contains "error:" must contain EXPECT: the helpful message comes first, not after
# errors from deeper in the library.
if(CASE EQUAL 0)
  set(_warn -Wall -Wextra -Werror)
else()
  set(_warn -Wall -Wextra)
endif()
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only -fdiagnostics-color=never ${_warn} "-I${INCLUDE}" -DCASE=${CASE}
          "${SOURCE}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(CASE EQUAL 0)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the control case (valid calls) does not compile:\n${out}")
  endif()
  return()
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "case ${CASE} compiled; it must fail with: ${EXPECT}")
endif()
string(REGEX MATCH "[^\n]*error:[^\n]*" first "${out}")
string(FIND "${first}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "case ${CASE}: the first error line\n  ${first}\ndoes not contain\n  ${EXPECT}\n"
                      "The compiler's output:\n${out}")
endif()
message(STATUS "case ${CASE}: ${first}")
