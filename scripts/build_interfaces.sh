#!/usr/bin/env bash
# Generate and build the ovseg_ros ROS 2 interfaces (msg/, srv/) with rosidl,
# using the ROS 2 PyPI wheels installed in the project's venv (no system ROS).
#
#   bash scripts/build_interfaces.sh        (what `make interfaces` runs)
#
# Result: build/interfaces/install/lib/python3.X/site-packages/ovseg_ros/{msg,srv}
# plus the typesupport libraries in build/interfaces/install/lib, and one file
# in the venv, site-packages/ovseg_ros_interfaces.pth, that puts that
# directory on sys.path so `import ovseg_ros.msg` works next to the editable
# source tree (ovseg_ros/__init__.py extends its __path__). Idempotent: a
# second run only rebuilds what changed. Environment overrides: VENV (default
# .venv), CMAKE (default: the system cmake), BUILD_DIR (default build/interfaces).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${VENV:-.venv}"
PY="$ROOT/$VENV/bin/python"
[[ "$VENV" = /* ]] && PY="$VENV/bin/python"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/interfaces}"
JOBS="${JOBS:-2}"

die() { echo "build_interfaces.sh: error: $*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no Python at $PY; run 'make venv' first (or set VENV=<path to venv>)"

# The system cmake (3.25 here). A pip 'cmake' in the venv would do as well.
CMAKE="${CMAKE:-$(command -v cmake || true)}"
[[ -n "$CMAKE" ]] || die "cmake not found; install it (apt-get install cmake, or pip install cmake)"
command -v cc >/dev/null && command -v c++ >/dev/null \
  || die "a C and a C++ compiler are needed (apt-get install build-essential)"

# Where the ROS wheels live: they install share/<pkg>/cmake under the venv prefix.
PREFIX="$("$PY" -c 'import sys; print(sys.prefix)')"
SITE_REL="$("$PY" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')"
VENV_SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
[[ -f "$PREFIX/share/rosidl_default_generators/cmake/rosidl_default_generators-config.cmake" \
   || -f "$PREFIX/share/rosidl_default_generators/cmake/rosidl_default_generatorsConfig.cmake" ]] \
  || die "rosidl_default_generators is not installed in $PREFIX; run: $PY -m pip install -r requirements/interfaces.txt"

export CMAKE_PREFIX_PATH="$PREFIX"
export AMENT_PREFIX_PATH="$PREFIX"
# rosidl's generators run as '<python> <script>' and some helpers call 'python3':
# both must be the venv's interpreter.
export PATH="$PREFIX/bin:$PATH"
# The wheels' libraries (librcutils, librosidl_*...) for the generator steps.
export LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

INSTALL="$BUILD_DIR/install"
CACHE="$BUILD_DIR/build/CMakeCache.txt"
# A cache from another checkout location or another venv cannot be reused.
if [[ -f "$CACHE" ]] && ! { grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$CACHE" \
                           && grep -qxF "Python3_EXECUTABLE:UNINITIALIZED=$PY" "$CACHE"; }; then
  echo "build_interfaces.sh: $BUILD_DIR was configured for another checkout or venv; rebuilding" >&2
  rm -rf "$BUILD_DIR"
fi
if [[ ! -f "$CACHE" ]]; then
  # RUNPATH: the Python extensions (lib/python3.X/site-packages/ovseg_ros) and
  # the libraries (lib/) find each other and the wheels' libraries without any
  # LD_LIBRARY_PATH from the user.
  "$CMAKE" -S "$ROOT" -B "$BUILD_DIR/build" -G "Unix Makefiles" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$INSTALL" \
    -DOVSEG_ROS_INTERFACES_ONLY=ON \
    -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$PY" \
    -DCMAKE_INSTALL_RPATH="\$ORIGIN;\$ORIGIN/../../..;$PREFIX/lib" \
    -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON
fi
"$CMAKE" --build "$BUILD_DIR/build" -j "$JOBS"
"$CMAKE" --install "$BUILD_DIR/build" >/dev/null

GEN_SITE="$INSTALL/$SITE_REL"
[[ -f "$GEN_SITE/ovseg_ros/msg/__init__.py" ]] || die "rosidl produced no $GEN_SITE/ovseg_ros/msg"
[[ ! -e "$GEN_SITE/ovseg_ros/__init__.py" ]] \
  || die "$GEN_SITE/ovseg_ros/__init__.py must not exist (it would hide the source package)"

# One .pth in the venv: the generated package's directory on sys.path. It has
# no __init__.py, so the source package (repository root on sys.path through
# the editable install's .pth, or a regular install) always wins the import
# and its pkgutil.extend_path picks this directory up. The second line puts the generated
# libraries on LD_LIBRARY_PATH inside the process, where rosidl_typesupport_c
# looks for the per-middleware typesupport library it dlopen()s; it runs
# before ros_wheels_bootstrapper.pth (file-name order), which re-executes the
# interpreter with that variable, so the dynamic loader sees it too.
PTH="$VENV_SITE/ovseg_ros_interfaces.pth"
LIBDIR="$INSTALL/lib"
cat > "$PTH.tmp" <<PTH_EOF
$GEN_SITE
import os; _p = os.environ.get('LD_LIBRARY_PATH', ''); os.environ['LD_LIBRARY_PATH'] = _p if '$LIBDIR' in _p.split(os.pathsep) else os.pathsep.join(filter(None, [_p, '$LIBDIR']))
PTH_EOF
if ! cmp -s "$PTH.tmp" "$PTH" 2>/dev/null; then mv "$PTH.tmp" "$PTH"; else rm -f "$PTH.tmp"; fi

# Smoke check in a fresh interpreter: the generated modules import and the
# C typesupport loads.
"$PY" - <<'PY_EOF'
import ovseg_ros
from ovseg_ros.msg import (ClassInfo, LocatedSegment, Segment, Segment3D, SegmentEmbeddings,
                           Segments, Segments3D, Vocabulary)
from ovseg_ros.srv import Locate, SetVocabulary
from rclpy.type_support import check_for_type_support
for t in (ClassInfo, Segment, Segments, Vocabulary, Segment3D, Segments3D, SegmentEmbeddings,
          LocatedSegment, SetVocabulary, Locate):
    check_for_type_support(t)
print("ovseg_ros interfaces ready:", ovseg_ros.msg.__path__[0])
PY_EOF
