# Work-arounds for building against the ROS 2 PyPI wheels (DESIGN §9).
#
# ovseg_prune_missing_include_dirs()
#
# The ROS 2 PyPI wheels (ros-std-msgs, ros-builtin-interfaces, ...) ship CMake
# export files whose imported targets list include directories of the machine
# that built the wheels (/opt/python/cp311-cp311/include/python3.11 and that
# tree's numpy include). CMake refuses imported targets with non-existent
# INTERFACE_INCLUDE_DIRECTORIES at generate time. This function removes, from
# the imported targets of the current directory only, the absolute include
# paths that do not exist here. Paths that exist and generator expressions are
# kept, so on a regular ROS 2 installation it changes nothing.
function(ovseg_prune_missing_include_dirs)
  get_property(_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_type ${_target} TYPE)
    if(_type STREQUAL "INTERFACE_LIBRARY" OR _type MATCHES "_LIBRARY$")
      get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
      if(_dirs)
        set(_kept "")
        set(_dropped "")
        foreach(_dir IN LISTS _dirs)
          if(IS_ABSOLUTE "${_dir}" AND NOT _dir MATCHES "\\$<" AND NOT EXISTS "${_dir}")
            list(APPEND _dropped "${_dir}")
          else()
            list(APPEND _kept "${_dir}")
          endif()
        endforeach()
        if(_dropped)
          message(STATUS "ovseg_ros: ${_target}: ignoring missing include dirs: ${_dropped}")
          set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
        endif()
      endif()
    endif()
  endforeach()
endfunction()

# ovseg_build_only_source_include_dirs(<target>...)
#
# rosidl_generator_py gives its library the Python and numpy include
# directories as PUBLIC include dirs, which end up in the exported CMake
# target. When the Python environment lives inside the source tree (the
# project's .venv), CMake refuses to export a path "prefixed in the source
# directory". Such paths are only needed to compile the target itself, so
# restrict them to the build interface; nothing else changes.
function(ovseg_build_only_source_include_dirs)
  foreach(_target IN LISTS ARGN)
    if(NOT TARGET ${_target})
      continue()
    endif()
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _dirs)
      string(FIND "${_dir}/" "${CMAKE_SOURCE_DIR}/" _pos)
      if(_pos EQUAL 0 AND NOT _dir MATCHES "\\$<")
        list(APPEND _new "$<BUILD_INTERFACE:${_dir}>")
        set(_changed TRUE)
      else()
        list(APPEND _new "${_dir}")
      endif()
    endforeach()
    if(_changed)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
    endif()
  endforeach()
endfunction()
