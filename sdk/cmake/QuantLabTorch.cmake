# Finds LibTorch for QuantLab and for plugins built against its SDK. In order: -DTorch_DIR=
# (<torch>/share/cmake/Torch); the `torch` package of the Python named by QL_TORCH_PYTHON (a
# variable or environment variable); the project's .venv (make deps installs the pinned wheel
# there, tools/requirements.txt); `python3`'s torch. QL_TORCH_VERSION is the version required.
if(NOT Torch_DIR OR NOT EXISTS "${Torch_DIR}/TorchConfig.cmake")
  set(_ql_pythons "${QL_TORCH_PYTHON}" "$ENV{QL_TORCH_PYTHON}" "${PROJECT_SOURCE_DIR}/.venv/bin/python" python3)
  foreach(_ql_python IN LISTS _ql_pythons)
    if(_ql_python)
      execute_process(COMMAND "${_ql_python}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                      OUTPUT_VARIABLE _ql_torch_cmake OUTPUT_STRIP_TRAILING_WHITESPACE
                      RESULT_VARIABLE _ql_status ERROR_QUIET)
      if(_ql_status EQUAL 0 AND EXISTS "${_ql_torch_cmake}/Torch/TorchConfig.cmake")
        set(Torch_DIR "${_ql_torch_cmake}/Torch" CACHE PATH "LibTorch's CMake package" FORCE)
        break()
      endif()
    endif()
  endforeach()
endif()
if(NOT Torch_DIR OR NOT EXISTS "${Torch_DIR}/TorchConfig.cmake")
  message(FATAL_ERROR "LibTorch not found: run `make deps` (installs the torch wheel into .venv), or pass "
                      "-DTorch_DIR=<torch>/share/cmake/Torch or -DQL_TORCH_PYTHON=<python with torch>")
endif()

# The wheel's package also finds the CUDA toolkit of the wheel's CUDA version (nvcc, cuDNN).
# Its own Caffe2 package and libraries, never a system LibTorch's (find_package and find_library
# would look in /usr before the wheel's folders).
get_filename_component(QL_TORCH_PREFIX "${Torch_DIR}/../../.." ABSOLUTE)
set(Caffe2_DIR "${QL_TORCH_PREFIX}/share/cmake/Caffe2" CACHE PATH "LibTorch's Caffe2 package" FORCE)
foreach(_ql_library TORCH c10 kineto C10_CUDA)
  string(TOLOWER "${_ql_library}" _ql_file)
  if(EXISTS "${QL_TORCH_PREFIX}/lib/lib${_ql_file}.so")
    set(${_ql_library}_LIBRARY "${QL_TORCH_PREFIX}/lib/lib${_ql_file}.so" CACHE FILEPATH "" FORCE)
  endif()
endforeach()
# The GPUs that CUDA sources are built for (torch's CMake turns the list into nvcc flags):
# Ampere (sm_80 code runs on every 8.x), Hopper, and Hopper's PTX, which the driver compiles for
# newer GPUs. Torch's own default would name architectures that CUDA 13 no longer supports.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0+PTX")
endif()
find_package(Torch REQUIRED)
if(QL_TORCH_VERSION AND NOT Torch_VERSION VERSION_EQUAL QL_TORCH_VERSION)
  message(FATAL_ERROR "LibTorch ${Torch_VERSION} in ${Torch_DIR}: this build needs ${QL_TORCH_VERSION}")
endif()

# The wheel's include folder also holds its own fmt (12) and protobuf headers, which would
# shadow the Debian ones our code links against (fmt 9, protobuf 3.21). The torch targets get
# a folder of links to everything else instead.
set(_ql_torch_include "${PROJECT_BINARY_DIR}/torch-include")
file(MAKE_DIRECTORY "${_ql_torch_include}")
file(GLOB _ql_torch_entries RELATIVE "${QL_TORCH_PREFIX}/include" "${QL_TORCH_PREFIX}/include/*")
foreach(_ql_entry IN LISTS _ql_torch_entries)
  if(NOT _ql_entry MATCHES "^(fmt|google)$" AND NOT EXISTS "${_ql_torch_include}/${_ql_entry}")
    file(CREATE_LINK "${QL_TORCH_PREFIX}/include/${_ql_entry}" "${_ql_torch_include}/${_ql_entry}" SYMBOLIC)
  endif()
endforeach()
foreach(_ql_target torch torch_cpu torch_cuda torch_library c10 c10_cuda)
  if(TARGET ${_ql_target})
    get_target_property(_ql_dirs ${_ql_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_ql_dirs)
      list(TRANSFORM _ql_dirs REPLACE "^${QL_TORCH_PREFIX}/include" "${_ql_torch_include}")
      set_target_properties(${_ql_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_ql_dirs}")
    endif()
  endif()
endforeach()
set(TORCH_INCLUDE_DIRS "${_ql_torch_include}" "${_ql_torch_include}/torch/csrc/api/include")
