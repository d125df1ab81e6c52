#!/usr/bin/env python3
"""Container images without Docker: writes `docker save`-format archives (manifest.json, one
config per image, uncompressed layer tars shared between images) that `ctr images import`
loads. Standard library only.

  images.py services --bin-dir DIR --version V [--registry R] [--extra-tag T]... --out X.tar
      every image of scripts/images.tsv from the binaries in DIR (the test build's), on one
      shared base layer (the shared libraries they link, CA certificates, /etc/passwd with
      nonroot 65532, /tmp) plus one layer holding the binary.
  images.py archive SPEC.json
      a generic archive (infrastructure and store images): layers from host files or from a
      directory tree, images = layers + config.
  images.py config NAME
      the image config images.tsv gives NAME (what `services` writes), as JSON.
  images.py check-dockerfile DOCKERFILE [ARCHIVE...]
      fails unless every image of images.tsv has a Dockerfile stage with the same entrypoint,
      cmd, user, environment, exposed ports and binary path, and every image in the archives
      carries exactly the config images.tsv gives it.
  images.py inspect ARCHIVE
      prints each image's tags and config.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES_TSV = HERE / "images.tsv"
# The runtime base both paths share (Dockerfile: distroless cc nonroot + ENV RUST_LOG, LOG_FORMAT).
BASE_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    "RUST_LOG=info",
    "LOG_FORMAT=json",
]
NONROOT = "65532:65532"
LABELS = {
    "org.opencontainers.image.source": "https://github.com/moviebook/moviebook",
    "org.opencontainers.image.licenses": "Apache-2.0",
    "org.opencontainers.image.vendor": "MovieBook",
}
FIXED_MTIME = 1767225600  # 2026-01-01: generated files get a fixed time (reproducible layers)


class SpecError(Exception):
    pass


# ---- images.tsv -----------------------------------------------------------------------------
def read_images(path: Path = IMAGES_TSV) -> list[dict]:
    images = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if len(cols) != 5:
            raise SpecError(f"{path}:{n}: want 5 columns (name kind ports env cmd), got {len(cols)}")
        name, kind, ports, env, cmd = cols
        if kind != "rust-bin":
            raise SpecError(f"{path}:{n}: unknown kind {kind!r}")
        split = lambda s: [] if s == "-" else s.split(",")  # noqa: E731
        images.append({"name": name, "kind": kind, "ports": [int(p) for p in split(ports)],
                       "env": split(env), "cmd": split(cmd)})
    return images


def entrypoint_path(name: str) -> str:
    return f"/usr/local/bin/{name}"


def image_config(img: dict) -> dict:
    """The container config of an images.tsv entry (the `config` of the OCI image config)."""
    env = list(BASE_ENV)
    for kv in img["env"]:
        key = kv.split("=", 1)[0]
        env = [e for e in env if e.split("=", 1)[0] != key] + [kv]
    return {
        "User": NONROOT,
        "Entrypoint": [entrypoint_path(img["name"])],
        "Cmd": img["cmd"] or None,
        "Env": env,
        "ExposedPorts": {f"{p}/tcp": {} for p in img["ports"]},
        "WorkingDir": "/home/nonroot",
        "Labels": dict(LABELS),
    }


# ---- layers ---------------------------------------------------------------------------------
class Layer:
    """An uncompressed layer tar written to a temporary file; its sha256 is the diff id."""

    def __init__(self, workdir: Path):
        fd, name = tempfile.mkstemp(suffix=".tar", dir=workdir)
        os.close(fd)
        self.path = Path(name)
        self.tar = tarfile.open(self.path, "w", format=tarfile.GNU_FORMAT)
        self.seen: set[str] = set()

    def _info(self, arc: str, typ, mode: int, uid=0, gid=0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(arc.lstrip("/"))
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = typ, mode, uid, gid, FIXED_MTIME
        return ti

    def dirs_for(self, arc: str):
        parts = Path(arc.lstrip("/")).parts[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/" + "/".join(parts[:i]))

    def dir(self, arc: str, mode=0o755, uid=0, gid=0):
        key = arc.strip("/")
        if key in self.seen:
            return
        self.dirs_for(arc)
        self.seen.add(key)
        self.tar.addfile(self._info(arc, tarfile.DIRTYPE, mode, uid, gid))

    def symlink(self, arc: str, target: str):
        self.dirs_for(arc)
        self.seen.add(arc.strip("/"))
        ti = self._info(arc, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def data(self, arc: str, data: bytes, mode=0o644, uid=0, gid=0):
        self.dirs_for(arc)
        self.seen.add(arc.strip("/"))
        ti = self._info(arc, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def file(self, src: str, arc: str, mode: int | None = None):
        real = os.path.realpath(src)
        st = os.stat(real)
        self.dirs_for(arc)
        self.seen.add(arc.strip("/"))
        ti = self._info(arc, tarfile.REGTYPE, mode if mode is not None else st.st_mode & 0o7777)
        ti.size = st.st_size
        with open(real, "rb") as f:
            self.tar.addfile(ti, f)

    def tree(self, root: str, exclude: list[str]):
        """A whole directory tree (a Debian rootfs), owners and modes as they are on disk.
        `exclude` entries are paths relative to root whose CONTENT is left out."""
        root = os.path.abspath(root)
        skip = {e.strip("/") for e in exclude}
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            dirnames.sort()
            if rel in skip:
                dirnames[:] = []
                filenames = []
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                arc = os.path.join(rel, name)
                if arc in self.seen:
                    continue
                ti = self.tar.gettarinfo(full, arcname=arc)
                if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE) or ti is None:
                    continue  # /dev is the runtime's
                ti.uname = ti.gname = ""
                if ti.isreg():
                    with open(full, "rb") as f:
                        self.tar.addfile(ti, f)
                else:
                    self.tar.addfile(ti)
                self.seen.add(arc)
            # os.walk does not descend into symlinked dirs: they were added as symlinks above

    def close(self) -> str:
        self.tar.close()
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


def shared_libraries(binary: str) -> list[str]:
    """The shared libraries (and the program interpreter) `ldd` resolves for a binary."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in out.stdout + out.stderr:
            return []
        raise SpecError(f"ldd {binary}: {out.stderr.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (", 1)[0]
            if target.startswith("/"):
                libs.append(target)
            elif "not found" in target:
                raise SpecError(f"{binary}: {line}")
        elif line.startswith("/"):
            libs.append(line.split(" (", 1)[0])
    return libs


def runtime_base(layer: Layer, binaries: list[str]):
    """What the Dockerfile's distroless/cc nonroot base gives: merged /usr with glibc and the
    libraries the binaries link, CA certificates, nsswitch, users root/nobody/nonroot, /tmp."""
    for d in ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/bin", "usr/sbin", "usr/local/bin", "etc/ssl/certs", "var"):
        layer.dir("/" + d)
    layer.symlink("/lib", "usr/lib")
    layer.symlink("/lib64", "usr/lib64")
    layer.symlink("/bin", "usr/bin")
    layer.symlink("/sbin", "usr/sbin")
    libs = sorted({lib for b in binaries for lib in shared_libraries(b)})
    for lib in libs:
        p = Path(lib)
        # keep the name the loader asks for; store it under /usr (the image's /lib is a link)
        parent = str(p.parent)
        for prefix in ("/lib/", "/lib64/"):
            if parent.startswith(prefix.rstrip("/")):
                parent = "/usr" + parent
        layer.file(lib, f"{parent}/{p.name}", 0o755)
    layer.file("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
    layer.data("/etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\n"
               b"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
               b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    layer.data("/etc/group", b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
    layer.data("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    layer.data("/etc/os-release", b'PRETTY_NAME="MovieBook runtime (Debian 12 libraries)"\nID=moviebook-runtime\n')
    layer.dir("/tmp", 0o1777)
    layer.dir("/root", 0o700)
    layer.dir("/home/nonroot", 0o700, 65532, 65532)


# ---- archives -------------------------------------------------------------------------------
def write_archive(out: Path, layers: dict[str, tuple[Path, str]], images: list[dict]):
    """images: [{tags, layers: [layer names], config}] -> docker-archive at `out`."""
    tmp = out.with_suffix(".partial")
    manifest = []
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        used = {name for img in images for name in img["layers"]}
        for name in sorted(used):
            path, digest = layers[name]
            tar.add(path, arcname=f"{digest}/layer.tar")
        for img in images:
            diff_ids = [f"sha256:{layers[n][1]}" for n in img["layers"]]
            cfg = {
                "architecture": "amd64",
                "os": "linux",
                "created": "2026-01-01T00:00:00Z",
                "config": img["config"],
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"scripts/images.py layer {n}"}
                            for n in img["layers"]],
            }
            raw = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
            digest = hashlib.sha256(raw).hexdigest()
            ti = tarfile.TarInfo(f"{digest}.json")
            ti.size, ti.mtime = len(raw), FIXED_MTIME
            tar.addfile(ti, io.BytesIO(raw))
            manifest.append({"Config": f"{digest}.json", "RepoTags": img["tags"],
                             "Layers": [f"{layers[n][1]}/layer.tar" for n in img["layers"]]})
        raw = json.dumps(manifest, indent=1).encode()
        ti = tarfile.TarInfo("manifest.json")
        ti.size, ti.mtime = len(raw), FIXED_MTIME
        tar.addfile(ti, io.BytesIO(raw))
    tmp.replace(out)


def read_archive(path: Path) -> list[dict]:
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return [{"tags": m["RepoTags"], "config": json.load(tar.extractfile(m["Config"]))} for m in manifest]


WEB_DIST = HERE.parent / "web" / "dist"


def add_web_assets(layer: Layer, dest: str):
    """The built web assets (web/dist: the storefront and the GraphQL IDE, `scripts/web.sh
    build`) under `dest`, read-only, for an image whose env names WEB_DIR (the booking service;
    the Dockerfile's `web` stage does the same)."""
    if not (WEB_DIST / "ide" / "index.html").is_file():
        raise SpecError(f"{WEB_DIST} holds no build: run scripts/web.sh build first")
    for path in sorted(p for p in WEB_DIST.rglob("*") if p.is_file()):
        layer.file(str(path), f"{dest}/{path.relative_to(WEB_DIST).as_posix()}", 0o444)


def cmd_services(args) -> int:
    images = read_images()
    bins = {}
    for img in images:
        b = Path(args.bin_dir) / img["name"]
        if not os.access(b, os.X_OK):
            raise SpecError(f"{b} is missing or not executable (build it first: cargo build --bins)")
        bins[img["name"]] = str(b)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        layers = {}
        base = Layer(Path(work))
        runtime_base(base, list(bins.values()))
        layers["runtime-base"] = (base.path, base.close())
        specs = []
        for img in images:
            layer = Layer(Path(work))
            layer.file(bins[img["name"]], entrypoint_path(img["name"]), 0o555)
            web_dir = dict(kv.split("=", 1) for kv in img["env"]).get("WEB_DIR")
            if web_dir:
                add_web_assets(layer, web_dir)
            layers[img["name"]] = (layer.path, layer.close())
            tags = [f"{args.registry}/{img['name']}:{t}" for t in [args.version, *args.extra_tag]]
            specs.append({"tags": tags, "layers": ["runtime-base", img["name"]], "config": image_config(img)})
        write_archive(out, layers, specs)
    for s in specs:
        print(" ".join(s["tags"]))
    return 0


def cmd_archive(args) -> int:
    """SPEC: {"out": path, "layers": {name: {"tree": dir, "exclude": [...]} | {"cache": tar}
    | {"files": [[src, dest, mode]], "data": [[dest, text, mode, uid, gid]], "dirs":
    [[dest, mode, uid, gid]], "symlinks": [[dest, target]], "runtime_base_for": [bins]}},
    "images": [{"tags": [...], "layers": [...], "config": {...}}]}"""
    spec = json.loads(Path(args.spec).read_text())
    out = Path(spec["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        layers = {}
        for name, ls in spec["layers"].items():
            cache = ls.get("cache")
            if cache and Path(cache).exists() and Path(cache + ".sha256").exists():
                layers[name] = (Path(cache), Path(cache + ".sha256").read_text().strip())
                continue
            layer = Layer(Path(work))
            if "runtime_base_for" in ls:
                runtime_base(layer, ls["runtime_base_for"])
            for d in ls.get("dirs", []):
                layer.dir(d[0], int(d[1], 8), *(d[2:4] or [0, 0]))
            for s in ls.get("symlinks", []):
                layer.symlink(s[0], s[1])
            for f in ls.get("files", []):
                layer.file(f[0], f[1], int(f[2], 8) if len(f) > 2 else None)
            for d in ls.get("data", []):
                layer.data(d[0], d[1].encode(), int(d[2], 8), *(d[3:5] or [0, 0]))
            if "tree" in ls:
                layer.tree(ls["tree"], ls.get("exclude", []))
            digest = layer.close()
            if cache:
                shutil.move(layer.path, cache)
                Path(cache + ".sha256").write_text(digest + "\n")
                layer.path = Path(cache)
            layers[name] = (layer.path, digest)
        write_archive(out, layers, spec["images"])
    for img in spec["images"]:
        print(" ".join(img["tags"]))
    return 0


# ---- Dockerfile agreement -------------------------------------------------------------------
def dockerfile_stages(text: str) -> dict[str, dict]:
    """Stage name -> {from, env, expose, user, entrypoint, cmd, copies} (instructions of that
    stage only; inheritance is resolved by `effective`)."""
    text = re.sub(r"\\\n", " ", text)
    stages: dict[str, dict] = {}
    cur = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            if not m:
                raise SpecError(f"cannot parse FROM {rest}")
            cur = {"from": m.group(1), "env": [], "expose": [], "user": None, "entrypoint": None,
                   "cmd": None, "copies": []}
            stages[(m.group(2) or f"#{len(stages)}").lower()] = cur
        elif cur is None:
            continue
        elif word == "ENV":
            for tok in shlex.split(rest):
                if "=" not in tok:
                    raise SpecError(f"ENV without '=' is not supported here: {line}")
                cur["env"].append(tok)
        elif word == "EXPOSE":
            cur["expose"] += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "USER":
            cur["user"] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            val = json.loads(rest)
            cur[word.lower()] = val if isinstance(val, list) else [val]
        elif word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            cur["copies"].append(parts[-1])
    return stages


def effective(stages: dict[str, dict], name: str) -> dict:
    """A stage with what it inherits from the stages it is built FROM."""
    chain, cur = [], name
    while cur in stages:
        chain.append(stages[cur])
        cur = stages[cur]["from"].lower()
    eff = {"env": {}, "expose": set(), "user": None, "entrypoint": None, "cmd": None, "copies": []}
    for st in reversed(chain):
        for kv in st["env"]:
            k, v = kv.split("=", 1)
            eff["env"][k] = v
        eff["expose"] |= set(st["expose"])
        for key in ("user", "entrypoint", "cmd"):
            if st[key] is not None:
                eff[key] = st[key]
        if st["entrypoint"] is not None and st["cmd"] is None:
            eff["cmd"] = None  # Docker resets CMD when a stage sets ENTRYPOINT
        eff["copies"] += st["copies"]
    return eff


def compare(name: str, docker: dict, cfg: dict) -> list[str]:
    problems = []
    want_env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in cfg["Env"]}
    # distroless sets PATH and SSL_CERT_FILE in its own config; the Dockerfile sets the rest
    for k, v in docker["env"].items():
        if want_env.get(k) != v:
            problems.append(f"{name}: Dockerfile ENV {k}={v}, node image has {k}={want_env.get(k)}")
    for k, v in want_env.items():
        if k not in ("PATH", "SSL_CERT_FILE") and k not in docker["env"]:
            problems.append(f"{name}: node image ENV {k}={v} is not in the Dockerfile stage")
    if docker["entrypoint"] != cfg["Entrypoint"]:
        problems.append(f"{name}: ENTRYPOINT {docker['entrypoint']} vs node image {cfg['Entrypoint']}")
    if (docker["cmd"] or None) != (cfg["Cmd"] or None):
        problems.append(f"{name}: CMD {docker['cmd']} vs node image {cfg['Cmd']}")
    if docker["user"] != cfg["User"]:
        problems.append(f"{name}: USER {docker['user']} vs node image {cfg['User']}")
    ports = {int(p.split("/")[0]) for p in cfg["ExposedPorts"]}
    if docker["expose"] != ports:
        problems.append(f"{name}: EXPOSE {sorted(docker['expose'])} vs node image {sorted(ports)}")
    if cfg["Entrypoint"][0] not in docker["copies"]:
        problems.append(f"{name}: the Dockerfile copies the binary to {docker['copies']}, the node image runs {cfg['Entrypoint'][0]}")
    return problems


def cmd_check_dockerfile(args) -> int:
    stages = dockerfile_stages(Path(args.dockerfile).read_text())
    images = read_images()
    problems = []
    for img in images:
        cfg = image_config(img)
        if img["name"] not in stages:
            problems.append(f"{img['name']}: no Dockerfile stage named {img['name']}")
            continue
        problems += compare(img["name"], effective(stages, img["name"]), cfg)
    # and the archives really carry those configs
    by_name = {img["name"]: image_config(img) for img in images}
    seen = set()
    for archive in args.archives:
        for entry in read_archive(Path(archive)):
            for tag in entry["tags"]:
                name = tag.rsplit("/", 1)[-1].split(":", 1)[0]
                if name in by_name:
                    seen.add(name)
                    got = entry["config"]["config"]
                    if got != by_name[name]:
                        problems.append(f"{tag}: config in {archive} differs from images.tsv: {json.dumps(got)}")
    if args.archives:
        for name in sorted(set(by_name) - seen):
            problems.append(f"{name}: not in {', '.join(args.archives)}")
    for p in problems:
        print(f"images: MISMATCH: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"images: the Dockerfile and the node images agree on {len(images)} images "
          f"(entrypoint, cmd, user, env, ports, binary path){'; archives checked' if args.archives else ''}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("services")
    s.add_argument("--bin-dir", required=True)
    s.add_argument("--version", required=True)
    s.add_argument("--registry", default="moviebook.local")
    s.add_argument("--extra-tag", action="append", default=[])
    s.add_argument("--out", required=True)
    a = sub.add_parser("archive")
    a.add_argument("spec")
    c = sub.add_parser("config")
    c.add_argument("name")
    d = sub.add_parser("check-dockerfile")
    d.add_argument("dockerfile")
    d.add_argument("archives", nargs="*")
    i = sub.add_parser("inspect")
    i.add_argument("archive")
    sub.add_parser("list")
    args = p.parse_args()
    try:
        if args.cmd == "services":
            return cmd_services(args)
        if args.cmd == "archive":
            return cmd_archive(args)
        if args.cmd == "config":
            img = next((i for i in read_images() if i["name"] == args.name), None)
            if img is None:
                raise SpecError(f"no image {args.name} in {IMAGES_TSV}")
            print(json.dumps(image_config(img), indent=1))
            return 0
        if args.cmd == "check-dockerfile":
            return cmd_check_dockerfile(args)
        if args.cmd == "inspect":
            for e in read_archive(Path(args.archive)):
                print(json.dumps(e, indent=1))
            return 0
        if args.cmd == "list":
            for img in read_images():
                print(img["name"])
            return 0
    except SpecError as e:
        print(f"images.py: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
