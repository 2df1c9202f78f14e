"""The wheels a GPU machine needs beside its image, derived, never listed by hand: requirements.txt, plus the
development packages the GPU check's own code imports (tests/unit, the test harness, bench/), closed over their
dependencies with this environment's installed versions, minus what the GPU image already has at a version that
satisfies every requirement on it (bench/gpu_image.txt). The image's torch stack (torch, torchaudio, triton, CUDA
libraries) is never carried: the machine's CUDA build is the one to use.

    python -m bench.gpu_wheels                    # the list, and why each package is carried or not
    python -m bench.gpu_wheels --download .whl    # `make gpu-wheels`: fetch them (Python 3.12, manylinux x86-64)
    python -m bench.gpu_wheels --check            # on the GPU machine: every requirement met? (gpu_check.sh)

--download builds a wheel for a pure-Python package that only has a source release (jieba), then installs the wheels
for the GPU machine's Python into a folder and packs it as one solid xz tarball, .whl/site.tar.xz: it travels with
the working tree, which must stay under the GPU machines' 64 MiB (the wheels themselves are over it).
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
IMAGE = Path(__file__).resolve().parent / "gpu_image.txt"
PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
CARRY_LIMIT_MIB = 64  # what travels to a GPU machine: the working tree and the carried paths together
# The image's CUDA build of torch and what comes with it: never replaced, whatever a requirement says.
TORCH_STACK = {"torch", "torchaudio", "torchvision", "triton"}
TORCH_PREFIXES = ("nvidia-", "cuda-")
# What the GPU check runs (gpu_check.sh): the modules whose imports decide which development packages travel.
# tests/helpers.py counts at module level only: its function-level imports serve the API tests (the openai SDK).
CHECKED = ("tests/unit/*.py", "tests/conftest.py", "tests/harness.py", "bench/*.py")
CHECKED_MODULE_LEVEL = ("tests/helpers.py",)


def target_environment() -> dict:
    env = default_environment()
    env.update(python_version=PYTHON, python_full_version=f"{PYTHON}.3", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def read_requirements(path: Path) -> list[Requirement]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            out += read_requirements(path.parent / line[2:].strip())
        else:
            out.append(Requirement(line))
    return out


def imported_modules(root: Path = ROOT) -> set[str]:
    """Top-level names imported by the code the GPU check runs."""
    names: set[str] = set()
    files = [(p, False) for pattern in CHECKED for p in root.glob(pattern)]
    files += [(root / p, True) for p in CHECKED_MODULE_LEVEL]
    for path, module_level in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if module_level else ast.walk(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def needed(root: Path = ROOT) -> list[Requirement]:
    """requirements.txt, and the lines of requirements-dev.txt whose package the checked code imports."""
    runtime = read_requirements(root / "requirements.txt")
    names = {canonicalize_name(r.name) for r in runtime}
    providers = metadata.packages_distributions()
    used = {canonicalize_name(d) for module in imported_modules(root) for d in providers.get(module, [])}
    dev = [r for r in read_requirements(root / "requirements-dev.txt")
           if canonicalize_name(r.name) not in names and canonicalize_name(r.name) in used]
    return runtime + dev


def read_image(path: Path = IMAGE) -> dict[str, str | None]:
    image: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            image[canonicalize_name(name)] = version or None
    return image


def torch_stack(name: str) -> bool:
    return name in TORCH_STACK or name.startswith(TORCH_PREFIXES)


@dataclass
class Plan:
    carried: dict[str, str | None] = field(default_factory=dict)  # name -> the version to fetch (None: pip picks)
    wanted: dict[str, list[tuple[SpecifierSet, str]]] = field(default_factory=dict)  # name -> (specifier, by whom)
    kept: dict[str, str] = field(default_factory=dict)  # name -> why the image's own is used

    def lines(self) -> list[str]:
        out = [f"carry {n}=={v}" if v else f"carry {n} (not installed here: pip picks)"
               for n, v in sorted(self.carried.items())]
        return out + [f"image {n}: {why}" for n, why in sorted(self.kept.items())]


def plan(requirements: list[Requirement], image: dict[str, str | None], installed=None) -> Plan:
    """Walk the requirements: a package the image satisfies is the image's (its own needs too); any other is carried
    at this environment's version and its needs walked. A later requirement can turn an image package into a
    carried one, never the reverse, so the walk ends."""
    installed = installed or _installed
    env = target_environment()
    result = Plan()
    queue = [(r, "requirements") for r in requirements]
    while queue:
        req, by = queue.pop(0)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        wanted = result.wanted.setdefault(name, [])
        wanted.append((req.specifier, by))
        if name in result.carried:
            continue
        said = ", ".join(f"{spec or 'any'} ({who})" for spec, who in wanted)
        if torch_stack(name):
            result.kept[name] = f"{image.get(name) or 'present'}: the image's CUDA build, never carried ({said})"
            continue
        if name in image:
            version = image[name]
            if version is not None and all(spec.contains(version, prereleases=True) for spec, _ in wanted):
                result.kept[name] = f"{version} satisfies {said}"
                continue
            if version is None and not any(spec for spec, _ in wanted):
                result.kept[name] = f"present, and nothing asks for a version ({said})"
                continue
        result.kept.pop(name, None)
        version, requires = installed(name)
        result.carried[name] = version
        queue += [(Requirement(r), name) for r in requires]
    return result


def _installed(name: str) -> tuple[str | None, list[str]]:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None, []
    return dist.version, [r for r in (dist.requires or []) if "extra ==" not in r and "extra==" not in r]


# ---- --download ---------------------------------------------------------------------------------------------------
BUNDLE = "site.tar.xz"


def download(result: Plan, out: Path) -> list[Path]:
    """The carried wheels, fetched into `out` (for Python 3.12 on manylinux x86-64)."""
    out.mkdir(parents=True, exist_ok=True)
    platform = [a for p in PLATFORMS for a in ("--platform", p)]
    sdist_only = []
    for pin in (f"{n}=={v}" if v else n for n, v in sorted(result.carried.items())):
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                               "--python-version", PYTHON, "--implementation", "cp", *platform, "-d", str(out), pin],
                              capture_output=True, text=True)
        if done.returncode:
            sdist_only.append(pin)
    for pin in sdist_only:  # no wheel at all: build one, which must be pure Python to run there
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp, pin], check=True)
            for wheel in Path(tmp).glob("*.whl"):
                if not wheel.name.endswith("-none-any.whl"):
                    raise SystemExit(f"{pin} has no wheel for Python {PYTHON} on x86-64 and builds only {wheel.name}")
                shutil.move(str(wheel), out / wheel.name)
    return sorted(out.glob("*.whl"))


def bundle(wheels: list[Path], out: Path) -> Path:
    """The wheels installed as the GPU machine's Python would (pip --target for 3.12 on x86-64), packed as one solid
    xz tarball: a third smaller than the wheels (50 MiB against 62 in 2026-12), whose zips compress file by file.
    There it is unpacked into a folder on PYTHONPATH, with no pip run."""
    platform = [a for p in PLATFORMS for a in ("--platform", p)]
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target",
                        str(site), "--python-version", PYTHON, "--implementation", "cp", *platform,
                        "--only-binary=:all:", *map(str, wheels)], check=True)
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: the check runs `python -m` only
        target = out / BUNDLE
        partial = target.with_suffix(".partial")
        if shutil.which("xz") and shutil.which("tar"):  # xz's threads: minutes faster than Python's lzma
            with open(partial, "wb") as sink:
                tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(site), "."], stdout=subprocess.PIPE)
                subprocess.run(["xz", "-9", "-T0", "-c"], stdin=tar.stdout, stdout=sink, check=True)
                if tar.wait():
                    raise SystemExit("tar failed")
        else:
            with tarfile.open(partial, "w:xz", preset=9) as tar:
                tar.add(site, arcname=".")
        os.replace(partial, target)
    return target


def tree_bytes(root: Path = ROOT) -> int:
    """What travels besides .whl/: the tracked and untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    return sum((root / f).stat().st_size for f in files if f and (root / f).is_file())


# ---- --check ------------------------------------------------------------------------------------------------------
def check(requirements: list[Requirement]) -> list[str]:
    """Requirements the running interpreter does not meet (the GPU machine, after the wheels are installed)."""
    env = default_environment()
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name}: missing ({req})")
            continue
        if req.specifier and not req.specifier.contains(Version(version), prereleases=True):
            problems.append(f"{req.name}: {version} does not satisfy {req}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--download", metavar="DIR", help="fetch the carried wheels into DIR (emptied of wheels first)")
    p.add_argument("--check", action="store_true", help="check this interpreter against the requirements")
    args = p.parse_args(argv)
    if args.check:
        problems = check(read_requirements(ROOT / "requirements.txt"))
        print("\n".join(problems) or "every requirement in requirements.txt is met")
        return 1 if problems else 0
    result = plan(needed(), read_image())
    print("\n".join(result.lines()))
    if args.download:
        out = Path(args.download)
        out.mkdir(parents=True, exist_ok=True)
        for old in [*out.glob("*.whl"), out / BUNDLE]:  # one version of each: two would stop the install there
            old.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            wheels = download(result, Path(tmp))
            print(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB", flush=True)
            packed = bundle(wheels, out)
        size, tree = packed.stat().st_size, tree_bytes()
        print(f"{packed}: {size / 2**20:.1f} MiB; with the working tree ({tree / 2**20:.1f} MiB) "
              f"{(size + tree) / 2**20:.1f} of the {CARRY_LIMIT_MIB} MiB that may travel to a GPU machine")
        if size + tree > CARRY_LIMIT_MIB * 2**20:
            print("too large to travel")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
