"""Installed as users install it: the wheel, built from this checkout and installed into a
fresh venv (dependencies from the package index, no test extras), serves the page, its assets
and the API from an empty directory, migrating its SQLite file from the packaged migrations;
`parley migrate` (the Procfile's release phase) works from the installed package too."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.infra.migrate import SCHEMA_HEAD

from .support import ROOT, free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Building and installing resolve from the package index (pip's cache makes it quick).
PIP_TIMEOUT_S = 600


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT_S
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything pointing at the checkout or configuring Parley."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PARLEY_", "VIRTUAL_ENV")) and k not in {"PYTHONPATH", "REDIS_URL", "DATABASE_URL"}
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout installed, and nothing else of ours."""
    base = tmp_path_factory.mktemp("install")
    wheels = base / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", wheels, ROOT, cwd=base)
    [wheel] = wheels.glob("parley-*.whl")
    venv = base / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=base)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=base, env=clean_env())
    return venv


def test_the_cli_runs_on_runtime_dependencies_alone(venv: Path, tmp_path: Path) -> None:
    python = venv / "bin" / "python"
    assert "serve" in run(venv / "bin" / "parley", "--help", cwd=tmp_path, env=clean_env())
    # What is installed is the package, with its page and migrations inside it ...
    script = "import app.infra.resources as r; print(r.STATIC_DIR, r.MIGRATIONS_DIR)"
    where = run(python, "-c", script, cwd=tmp_path, env=clean_env())
    static, migrations = (Path(p) for p in where.split())
    assert venv in static.parents and (static / "index.html").is_file()
    assert venv in migrations.parents and (migrations / "env.py").is_file()
    # ... and none of the test extras.
    missing = subprocess.run([python, "-c", "import pytest"], env=clean_env(), capture_output=True, timeout=60)
    assert missing.returncode != 0


def test_parley_migrate_from_the_installed_package(venv: Path, tmp_path: Path) -> None:
    database = tmp_path / "release.db"
    env = clean_env(DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    run(venv / "bin" / "parley", "migrate", cwd=tmp_path, env=env)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (SCHEMA_HEAD,)


@pytest.fixture
def installed_server(venv: Path, tmp_path: Path) -> Iterator[str]:
    """`parley serve` from an empty directory, on the installed package alone."""
    workdir = tmp_path / "empty"
    workdir.mkdir()
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [venv / "bin" / "parley", "serve"], cwd=workdir, env=clean_env(PORT=str(port)), stdout=log, stderr=log
    )
    try:
        wait_for_port(port, timeout_s=60, process=process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while httpx.get(url + "/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_the_installed_server_serves_the_page_and_migrates(installed_server: str) -> None:
    with httpx.Client(base_url=installed_server, timeout=10) as client:
        home = client.get("/")
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert "/static/" in home.text
        for asset in ("/static/app.js", "/static/style.css", "/sw.js"):
            assert client.get(asset).status_code == 200, asset
        # Development login and a new discussion: the tables exist, so the migrations ran.
        login = client.post("/api/dev/login", json={"name": "alice"})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        created = client.post(
            "/api/discussions", json={"title": "Installed"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201, created.text
        page = client.get(f"/d/{created.json()['id']}")
        assert page.status_code == 200 and page.text == home.text
