"""A Hub on loopback for the tests: olah reads, a small git write front writes.

    python tests/hub_server.py --root DIR            # prints "READY <port>" once it listens

Repositories are real git repositories under DIR/{models,datasets,spaces}/<namespace>/<name>, with
LFS objects in .git/lfs/objects/aa/bb/<sha256>. olah (offline mirror mode) serves the Hub's read
API from them (refs, revision info, tree, paths-info, resolve by branch, tag or sha). The write
front adds the endpoints the clients use to write (repo create and delete, preupload, LFS batch and
upload, NDJSON commit, branch, tag, validate-yaml), made with git plumbing, and answers what olah
answers wrongly for a local mirror: a missing repo, revision or file is a 404 with the Hub's
X-Error-Code.

`POST /_test/faults` with `{"method": "POST", "path": "regex", "status": 503, "skip": 2, "count": 3}`
lets `skip` matching requests through, then fails the next `count` with `status`; `DELETE
/_test/faults` clears them; `GET /_test/requests` lists the requests seen.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow", ".png", ".jpg", ".pt", ".pth", ".ckpt", ".h5")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "hub", "GIT_AUTHOR_EMAIL": "hub@localhost",
    "GIT_COMMITTER_NAME": "hub", "GIT_COMMITTER_EMAIL": "hub@localhost",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
}
ZERO = "0" * 40
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
LFS_POINTER_RE = re.compile(r"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n")


class GitError(Exception):
    pass


class Repos:
    """The git side: one lock for all writes (the tests write little and in order)."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.Lock()

    def path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def git(self, repo: Path, *args, data: bytes | None = None, env: dict | None = None, check=True) -> str:
        proc = subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True,
                              env={**os.environ, **GIT_ENV, **(env or {})})
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode().strip()

    def exists(self, repo_type: str, repo_id: str) -> bool:
        return (self.path(repo_type, repo_id) / ".git").is_dir()

    def resolve(self, repo: Path, rev: str) -> str | None:
        """A commit sha for a branch, tag or (possibly short) sha; None when there is none."""
        for ref in (f"refs/heads/{rev}", f"refs/tags/{rev}", rev):
            out = self.git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
            if out:
                return out
        return None

    def entry(self, repo: Path, commit: str, path: str) -> tuple[str, str] | None:
        """(type, sha) of `path` in `commit` ('blob' or 'tree'), or None."""
        out = self.git(repo, "ls-tree", commit, "--", path.rstrip("/"), check=False)
        if not out:
            return None
        mode_type_sha, _ = out.split("\t", 1)
        _, kind, sha = mode_type_sha.split()
        return kind, sha

    def remote_oid(self, repo: Path, commit: str, path: str) -> str | None:
        """What the Hub reports as a file's oid: sha256 for an LFS file, the git blob sha otherwise."""
        found = self.entry(repo, commit, path)
        if found is None or found[0] != "blob":
            return None
        blob = self.git(repo, "cat-file", "-p", found[1])
        match = LFS_POINTER_RE.fullmatch(blob + "\n") or LFS_POINTER_RE.fullmatch(blob)
        return match.group(1) if match else found[1]

    def lfs_path(self, repo: Path, oid: str) -> Path:
        return repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid

    def create(self, repo_type: str, repo_id: str):
        repo = self.path(repo_type, repo_id)
        repo.mkdir(parents=True)
        self.git(repo, "init", "-q", "-b", "main")
        blob = self.git(repo, "hash-object", "-w", "--stdin", data=GITATTRIBUTES.encode())
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},.gitattributes", env=env)
            tree = self.git(repo, "write-tree", env=env)
        commit = self.git(repo, "commit-tree", tree, "-m", "initial commit")
        self.git(repo, "update-ref", "refs/heads/main", commit, ZERO)

    def commit(self, repo: Path, branch: str, header: dict, operations: list[dict]) -> str:
        parent = self.resolve(repo, f"refs/heads/{branch}")
        if parent is None:
            raise LookupError(branch)
        if header.get("parentCommit") and not parent.startswith(header["parentCommit"]):
            raise ValueError(f"parent commit {header['parentCommit']} is not the head of {branch}")
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git(repo, "read-tree", parent, env=env)
            for op in operations:
                key, value = op["key"], op["value"]
                path = value["path"].strip("/")
                if key == "file":
                    content = base64.b64decode(value["content"])
                    blob = self.git(repo, "hash-object", "-w", "--stdin", data=content)
                    self.git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
                elif key == "lfsFile":
                    if not self.lfs_path(repo, value["oid"]).is_file():
                        raise FileNotFoundError(f"LFS object {value['oid']} of {path} was not uploaded")
                    pointer = LFS_POINTER.format(oid=value["oid"], size=value["size"]).encode()
                    blob = self.git(repo, "hash-object", "-w", "--stdin", data=pointer)
                    self.git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
                elif key in ("deletedFile", "deletedFolder"):
                    self.git(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", path, env=env)
                else:
                    raise ValueError(f"unsupported commit operation {key!r}")
            tree = self.git(repo, "write-tree", env=env)
        message = [header.get("summary") or "commit"]
        if header.get("description"):
            message += ["-m", header["description"]]
        commit = self.git(repo, "commit-tree", tree, "-p", parent, "-m", *message)
        self.git(repo, "update-ref", f"refs/heads/{branch}", commit, parent)
        return commit


def build_app(root: Path):
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from fastapi.routing import APIRouter
    from olah.configs import OlahConfig
    from olah.server import AppSettings, app

    config = OlahConfig()
    config.offline = True
    config.mirrors_path = [str(root)]
    config.repos_path = str(root / ".olah-cache")
    app.state.app_settings = AppSettings(config=config)
    repos = Repos(root)
    faults: list[dict] = []
    seen: list[str] = []

    def error(status: int, code: str, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status,
                            headers={"X-Error-Code": code, "X-Error-Message": message})

    def repo_or_error(repo_type: str, repo_id: str):
        if not repos.exists(repo_type, repo_id):
            return None, error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repos.path(repo_type, repo_id), None

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # Paths whose repo, revision and file the middleware checks before olah sees them.
    resolve_re = re.compile(r"^/(?:(models|datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
    api_rev_re = re.compile(
        r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(revision|tree|paths-info)/([^/]+)(?:/(.*))?$")
    api_repo_re = re.compile(
        r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(?:refs|revision|tree|paths-info)(?:/.*)?)?$")

    @app.middleware("http")
    async def hub_semantics(request: Request, call_next):
        from urllib.parse import unquote

        path = unquote(request.url.path)
        seen.append(f"{request.method} {path}")
        for fault in faults:
            if fault["count"] > 0 and fault["method"] in (request.method, "*") and re.search(fault["path"], path):
                if fault["skip"] > 0:
                    fault["skip"] -= 1
                    continue
                fault["count"] -= 1
                return Response(status_code=fault["status"], content=b"injected fault")
        if request.method in ("GET", "HEAD"):
            match = resolve_re.match(path)
            if match and match.group(2).split("/")[0] not in ("api", "_test"):
                repo_type = REPO_TYPES[match.group(1) or "models"]
                repo, err = repo_or_error(repo_type, match.group(2))
                if err is not None:
                    return err
                commit = repos.resolve(repo, match.group(3))
                if commit is None:
                    return error(404, "RevisionNotFound", f"Invalid rev id: {match.group(3)}")
                if repos.entry(repo, commit, match.group(4)) is None:
                    return error(404, "EntryNotFound", f"{match.group(4)} does not exist on {match.group(3)}")
                if request.method == "GET" and (found := repos.remote_oid(repo, commit, match.group(4))):
                    # olah streams an LFS file without its headers; hf_hub wants the commit and etag.
                    response = await call_next(request)
                    response.headers["X-Repo-Commit"] = commit
                    response.headers.setdefault("ETag", f'"{found}"')
                    return response
        match = api_repo_re.match(path)
        if match and request.method in ("GET", "HEAD", "POST") and "/preupload/" not in path:
            repo, err = repo_or_error(REPO_TYPES[match.group(1)], match.group(2))
            if err is not None:
                return err
            rev = api_rev_re.match(path)
            if rev:
                commit = repos.resolve(repo, rev.group(4))
                if commit is None:
                    return error(404, "RevisionNotFound", f"Invalid rev id: {rev.group(4)}")
                folder = (rev.group(5) or "").strip("/")
                if rev.group(3) == "tree" and folder and repos.entry(repo, commit, folder) is None:
                    return error(404, "EntryNotFound", f"{folder} does not exist on {rev.group(4)}")
            if path.rstrip("/") == f"/api/{match.group(1)}/{match.group(2)}":
                # olah needs a revision for repo info: answer for main.
                request.scope["path"] = f"/api/{match.group(1)}/{match.group(2)}/revision/main"
        return await call_next(request)

    router = APIRouter()

    @router.post("/_test/faults")
    def set_faults(body: dict):
        faults.append({"method": body.get("method", "*"), "path": body["path"], "status": body.get("status", 503),
                       "count": body.get("count", 1), "skip": body.get("skip", 0)})
        return {"ok": True}

    @router.delete("/_test/faults")
    def clear_faults():
        faults.clear()
        return {"ok": True}

    @router.get("/_test/requests")
    def requests_seen():
        return seen

    @router.get("/api/whoami-v2")
    def whoami():
        return {"type": "user", "name": "user", "fullname": "Test User", "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"role": "write", "displayName": "tests"}}}

    @router.post("/api/validate-yaml")
    def validate_yaml():
        return {"errors": [], "warnings": []}

    @router.post("/api/repos/create")
    def create_repo(body: dict, request: Request):
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        url = f"{base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}"
        with repos.lock:
            if repos.exists(repo_type, repo_id):
                return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
            repos.create(repo_type, repo_id)
        return {"url": url, "name": repo_id, "id": repo_id}

    @router.delete("/api/repos/delete")
    def delete_repo(body: dict):
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        with repos.lock:
            if not repos.exists(repo_type, repo_id):
                return error(404, "RepoNotFound", f"Repository {repo_id} not found")
            shutil.rmtree(repos.path(repo_type, repo_id))
        return {"ok": True}

    @router.post("/api/{repo_type}/{namespace}/{name}/preupload/{revision:path}")
    def preupload(repo_type: str, namespace: str, name: str, revision: str, body: dict):
        repo, err = repo_or_error(REPO_TYPES[repo_type], f"{namespace}/{name}")
        if err is not None:
            return err
        commit = repos.resolve(repo, revision)
        files = []
        for f in body["files"]:
            sample = base64.b64decode(f["sample"])
            binary = b"\x00" in sample
            try:
                sample.decode()
            except UnicodeDecodeError:
                binary = True
            lfs = f["path"].endswith(LFS_SUFFIXES) or binary or f["size"] > 10 * 2**20
            oid = repos.remote_oid(repo, commit, f["path"]) if commit else None
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return {"files": files, "commitOid": commit}

    def lfs_batch(repo_type: str, repo_id: str, body: dict, request: Request):
        repo, err = repo_or_error(repo_type, repo_id)
        if err is not None:
            return err
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not repos.lfs_path(repo, obj["oid"]).is_file():
                href = f"{base_url(request)}/_lfs/{repo_type}/{repo_id}/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(entry)
        return JSONResponse({"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json")

    @router.post("/{namespace}/{name}.git/info/lfs/objects/batch")
    def lfs_batch_model(namespace: str, name: str, body: dict, request: Request):
        return lfs_batch("model", f"{namespace}/{name}", body, request)

    @router.post("/{repo_type}/{namespace}/{name}.git/info/lfs/objects/batch")
    def lfs_batch_typed(repo_type: str, namespace: str, name: str, body: dict, request: Request):
        return lfs_batch(REPO_TYPES[repo_type], f"{namespace}/{name}", body, request)

    @router.put("/_lfs/{repo_type}/{namespace}/{name}/{oid}")
    async def lfs_upload(repo_type: str, namespace: str, name: str, oid: str, request: Request):
        repo, err = repo_or_error(repo_type, f"{namespace}/{name}")
        if err is not None:
            return err
        data = await request.body()
        if hashlib.sha256(data).hexdigest() != oid:
            return error(400, "BadRequest", "sha256 mismatch")
        target = repos.lfs_path(repo, oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return Response(status_code=200)

    @router.post("/api/{repo_type}/{namespace}/{name}/commit/{revision:path}")
    async def commit(repo_type: str, namespace: str, name: str, revision: str, request: Request):
        repo_id = f"{namespace}/{name}"
        repo, err = repo_or_error(REPO_TYPES[repo_type], repo_id)
        if err is not None:
            return err
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        operations = [line for line in lines if line["key"] != "header"]
        try:
            with repos.lock:
                sha = repos.commit(repo, revision, header, operations)
        except LookupError:
            return error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        except (ValueError, FileNotFoundError) as exc:
            return error(412 if "parent" in str(exc) else 400, "BadRequest", str(exc))
        prefix = URL_PREFIX[REPO_TYPES[repo_type]]
        return {"success": True, "commitOid": sha, "commitUrl": f"{base_url(request)}/{prefix}{repo_id}/commit/{sha}",
                "pullRequestUrl": None}

    @router.post("/api/{repo_type}/{namespace}/{name}/branch/{branch:path}")
    def create_branch(repo_type: str, namespace: str, name: str, branch: str, body: dict | None = None):
        repo, err = repo_or_error(REPO_TYPES[repo_type], f"{namespace}/{name}")
        if err is not None:
            return err
        with repos.lock:
            if repos.resolve(repo, f"refs/heads/{branch}") is not None:
                return error(409, "Conflict", f"Reference refs/heads/{branch} already exists")
            start = repos.resolve(repo, (body or {}).get("startingPoint") or "main")
            if start is None:
                return error(404, "RevisionNotFound", f"Invalid rev id: {(body or {}).get('startingPoint')}")
            repos.git(repo, "update-ref", f"refs/heads/{branch}", start, ZERO)
        return {"ok": True}

    @router.delete("/api/{repo_type}/{namespace}/{name}/branch/{branch:path}")
    def delete_branch(repo_type: str, namespace: str, name: str, branch: str):
        repo, err = repo_or_error(REPO_TYPES[repo_type], f"{namespace}/{name}")
        if err is not None:
            return err
        with repos.lock:
            repos.git(repo, "update-ref", "-d", f"refs/heads/{branch}")
        return {"ok": True}

    @router.post("/api/{repo_type}/{namespace}/{name}/tag/{revision:path}")
    def create_tag(repo_type: str, namespace: str, name: str, revision: str, body: dict):
        repo, err = repo_or_error(REPO_TYPES[repo_type], f"{namespace}/{name}")
        if err is not None:
            return err
        with repos.lock:
            if repos.resolve(repo, f"refs/tags/{body['tag']}") is not None:
                return error(409, "Conflict", f"Tag {body['tag']} already exists")
            commit = repos.resolve(repo, revision)
            if commit is None:
                return error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            repos.git(repo, "update-ref", f"refs/tags/{body['tag']}", commit, ZERO)
        return {"ok": True}

    @router.delete("/api/{repo_type}/{namespace}/{name}/tag/{tag:path}")
    def delete_tag(repo_type: str, namespace: str, name: str, tag: str):
        repo, err = repo_or_error(REPO_TYPES[repo_type], f"{namespace}/{name}")
        if err is not None:
            return err
        with repos.lock:
            repos.git(repo, "update-ref", "-d", f"refs/tags/{tag}")
        return {"ok": True}

    # The write front goes before olah's catch-all routes.
    app.router.routes[:0] = router.routes
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder of the git repositories")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)  # olah writes its logs under ./logs

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    app = build_app(root)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    print(f"READY {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
