"""The download step against a real local HTTP server laid out like the public services: the GZ2
table on S3, the GZ DECaLS release on Zenodo, the Legacy Surveys viewer's JPEG/FITS cutouts and the
SDSS SkyServer JPEG cutout. The server misbehaves on purpose for chosen galaxies (keyed by their
ra): slow, 404, a 500 that succeeds on retry, a body shorter than its Content-Length, a web page
instead of an image, a blank image, no answer at all. No test touches the internet."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import shlex
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from click.testing import CliRunner
from PIL import Image

from tests.conftest import decals_frame, hart16_frame
from zoobot.data import download as dl
from zoobot.data.catalog import load_catalog
from zoobot.data.download import (ChecksumError, DownloadCatalogConfig, DownloadError, DownloadImagesConfig,
                                  download_catalog, download_images)
from zoobot.data.download.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
FAST = {"retries": 1, "backoff": 0.01, "timeout": 1.0}  # short back-off; 'hang' (2.5 s) outlasts the timeout


# -- the local server --------------------------------------------------------------------------------


class FakeServices:
    """Catalog files by path, cutouts generated on request, misbehaviour chosen per ra."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate_once: set[str] = set()  # catalog paths whose first answer is cut off
        self.behaviour: dict[str, str] = {}  # ra as sent ("10.000000") -> what to do
        self.log: list[tuple[str, dict, dict]] = []  # (path, query, headers) of every request
        self.events: list[tuple[str, str]] = []  # ("asked" | "answered", ra) of every cutout request, in order
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def requests_for(self, ra: float) -> int:
        return sum(1 for _, q, _ in self.log if q.get("ra") == f"{ra:.6f}")

    def answered_while_waiting_for(self, ra: float) -> list[str]:
        """The ra of every other galaxy answered between the first and the second request for `ra`. A retry
        runs in the worker that made the first attempt, so a client fetching one galaxy at a time would
        have none: this is what the other workers got done while one waited out `ra`."""
        key = f"{ra:.6f}"
        with self.lock:
            events = list(self.events)
        first, second = [i for i, (kind, r) in enumerate(events) if kind == "asked" and r == key][:2]
        return [r for kind, r in events[first:second] if kind == "answered" and r != key]

    def _handler(self):
        services = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with services.lock:
                    services.log.append((parts.path, query, dict(self.headers)))
                    services.events.append(("asked", query.get("ra", "")))
                    seen = sum(1 for p, q, _ in services.log if p == parts.path and q == query)
                try:
                    if parts.path in services.files:
                        self._file(parts.path, seen)
                    elif parts.path.endswith(("/viewer/jpeg-cutout", "/viewer/fits-cutout",
                                              "/SkyServerWS/ImgCutout/getjpeg")):
                        self._cutout(parts.path, query, seen)
                    else:
                        self.send_error(404)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the 'hang' case)
                finally:
                    with services.lock:
                        services.events.append(("answered", query.get("ra", "")))

            def _send(self, body: bytes, content_type: str, status: int = 200, length: int | None = None,
                      extra: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _file(self, path: str, seen: int):
                body = services.files[path]
                if path in services.truncate_once and seen == 1:
                    return self._send(body[: len(body) // 2], "application/octet-stream", length=len(body))
                start = self.headers.get("Range", "bytes=-").removeprefix("bytes=").split("-")[0]
                if start:
                    start = int(start)
                    self._send(body[start:], "application/octet-stream", status=206,
                               extra={"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
                else:
                    self._send(body, "application/octet-stream")

            def _cutout(self, path: str, query: dict, seen: int):
                what = services.behaviour.get(query.get("ra", ""), "ok")
                if what == "404":
                    return self.send_error(404, "No such cutout")
                if what == "500-once" and seen == 1:
                    return self.send_error(500, "Temporary trouble")
                if what in ("slow", "hang"):
                    time.sleep(0.3 if what == "slow" else 2.5)
                if what == "html":
                    return self._send(b"<html><body>Service unavailable</body></html>", "text/html")
                size = int(query.get("size") or query["width"])
                seed = int(float(query["ra"]) * 1000)
                if path.endswith("fits-cutout"):
                    body = fits_bytes(size, seed, blank=what == "blank")
                    content_type = "image/fits"
                else:
                    body = jpeg_bytes(size, seed, blank=what == "blank")
                    content_type = "image/jpeg"
                if what == "truncated":
                    return self._send(body[: len(body) // 2], content_type, length=len(body))
                self._send(body, content_type)

        return Handler


def jpeg_bytes(size: int, seed: int, blank: bool = False) -> bytes:
    pixels = np.zeros((size, size, 3), np.uint8) if blank else \
        np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def fits_bytes(size: int, seed: int, blank: bool = False) -> bytes:
    cube = np.zeros((3, size, size), np.float32) if blank else \
        np.random.default_rng(seed).gamma(2.0, 0.05, (3, size, size)).astype(np.float32)
    hdu = fits.PrimaryHDU(cube)
    hdu.header["BANDS"] = "grz"
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


@pytest.fixture
def services():
    fake = FakeServices()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def decals_catalog(tmp_path: Path, ras: list[float]) -> Path:
    frame = decals_frame(len(ras))
    frame["ra"] = ras
    frame["dec"] = 5.0
    path = tmp_path / "in" / "gz_decals_volunteers_5.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def no_part_files(folder: Path) -> bool:
    return not list(folder.rglob("*.part"))


# -- images --------------------------------------------------------------------------------------------


# The hanging galaxy comes early, so that most galaxies are still to fetch while a worker waits it out.
TROUBLE = {80.0: "hang", 30.0: "slow", 40.0: "404", 50.0: "500-once", 60.0: "truncated", 70.0: "html"}


def test_images_survive_every_kind_of_trouble_and_resume(services, tmp_path):
    ras = [10.0, 20.0, *TROUBLE, float("nan")]
    services.behaviour = {f"{ra:.6f}": what for ra, what in TROUBLE.items()}
    catalog = decals_catalog(tmp_path, ras)
    out = tmp_path / "out"
    config = DownloadImagesConfig(catalog=str(catalog), output_dir=str(out), size=32,
                                  base_url=f"{services.url}/viewer", workers=4, **FAST)

    result = download_images(config)
    # the hanging galaxy did not hold up the others: they were answered while its worker waited it out
    assert services.answered_while_waiting_for(80.0)

    assert result.survey == "legacy" and result.id_column == "iauname"
    assert (result.n_rows, result.n_selected, result.n_downloaded, result.n_present) == (9, 8, 4, 0)
    reasons = dict(zip(result.failures["row"], result.failures["reason"]))
    assert sorted(reasons) == [3, 5, 7, 8, 9]
    assert reasons[3].startswith("timed out")
    assert reasons[5].startswith("HTTP 404")
    assert reasons[7].startswith("truncated") and "after 2 attempts" in reasons[7]
    assert "web page" in reasons[8]
    assert reasons[9].startswith("no sky position: ra=nan")
    # 404 is final, 500 and cut-off bodies are retried, and the 500 then succeeded
    assert services.requests_for(40.0) == 1
    assert services.requests_for(50.0) == 2 and services.requests_for(60.0) == 2

    # the failures CSV says the same, with the address that failed
    on_disk = pd.read_csv(out / "download_failures.csv", keep_default_na=False)
    assert list(on_disk.columns) == ["row", "id", "url", "reason"]
    assert on_disk["reason"].tolist() == result.failures["reason"].tolist()
    assert on_disk.set_index("row").loc[5, "url"].startswith(
        f"{services.url}/viewer/jpeg-cutout?ra=40.000000&dec=5.000000")

    # requests look like the real viewer's
    _, query, headers = next(entry for entry in services.log if entry[1]["ra"] == "10.000000")
    assert query == {"ra": "10.000000", "dec": "5.000000", "layer": "ls-dr10", "pixscale": "0.262", "size": "32"}
    assert headers["User-Agent"].startswith("zoobot/")

    # only whole, verified images under their final names; no .part anywhere
    assert no_part_files(tmp_path)
    images = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*.jpg"))
    written = pd.read_csv(out / "catalog.csv")
    assert sorted(written["file_loc"]) == images and len(images) == 4
    assert written["ra"].tolist() == [10.0, 20.0, 30.0, 50.0]
    first = written["iauname"].iloc[0]
    assert written["file_loc"].iloc[0] == f"images/{first[:4]}/{first}.jpg"

    # a rerun downloads nothing it already has, and tries the failures again
    before = {ra: services.requests_for(ra) for ra in (10.0, 20.0, 30.0, 50.0)}
    again = download_images(config)
    assert (again.n_downloaded, again.n_present, again.n_failed) == (0, 4, 5)
    assert {ra: services.requests_for(ra) for ra in before} == before
    assert services.requests_for(40.0) == 2


def test_written_catalog_loads_and_converts(services, tmp_path):
    from zoobot.data.convert import ConvertConfig, convert

    catalog = decals_catalog(tmp_path, [11.0, 12.0, 13.0, 14.0, 15.0])
    result = download_images(DownloadImagesConfig(catalog=str(catalog), output_dir=str(tmp_path / "sample"),
                                                  size=32, base_url=f"{services.url}/viewer", **FAST))
    assert result.n_written == 5

    loaded = load_catalog(result.output_catalog, "decals")
    assert len(loaded.galaxies) == 5 and loaded.rejected.empty
    assert all(Path(p).is_file() for p in loaded.galaxies["image_path"])
    manifest = convert(ConvertConfig(catalog=str(result.output_catalog), output_dir=str(tmp_path / "shards"),
                                     image_size=32, shard_size=4, workers=1)).manifest
    assert sum(manifest.counts.values()) == 5


def test_fits_cutouts_with_the_address_from_the_environment(services, tmp_path, monkeypatch):
    from zoobot.data.images import ImageSpec, read_image

    monkeypatch.setenv("ZOOBOT_LEGACY_SURVEY_URL", f"{services.url}/viewer")
    services.behaviour = {"23.000000": "blank"}
    catalog = decals_catalog(tmp_path, [21.0, 22.0, 23.0])
    result = download_images(DownloadImagesConfig(catalog=str(catalog), image_format="fits", size=24, **FAST))

    assert result.output_catalog == (catalog.parent / "catalog.csv").resolve()  # beside the input by default
    assert result.n_downloaded == 2
    assert result.failures["reason"].str.startswith("blank cutout").tolist() == [True]
    query = services.log[0][1]
    assert services.log[0][0] == "/viewer/fits-cutout" and query["bands"] == "grz"
    for path in result.galaxies["image_path"]:
        assert path.endswith(".fits")
        assert read_image(catalog.parent / path, ImageSpec(size=16)).shape == (16, 16, 3)
    assert no_part_files(tmp_path)


def test_gz2_catalog_gets_sdss_cutouts_by_default(services, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOBOT_SDSS_URL", f"{services.url}/dr17/SkyServerWS/ImgCutout")
    frame = hart16_frame(3)
    path = tmp_path / "gz2_hart16.csv"
    frame.to_csv(path, index=False)
    result = download_images(DownloadImagesConfig(catalog=str(path), output_dir=str(tmp_path / "gz2"), size=64,
                                                  **FAST))

    assert result.survey == "sdss" and result.id_column == "dr7objid" and result.n_written == 3
    route, query, _ = services.log[0]
    assert route == "/dr17/SkyServerWS/ImgCutout/getjpeg"
    assert {k: query[k] for k in ("scale", "width", "height")} == {"scale": "0.396", "width": "64", "height": "64"}
    objid = str(frame["dr7objid"].iloc[0])  # 64-bit ids kept exactly, files spread by their last digits
    assert result.galaxies["image_path"].iloc[0] == f"images/{objid[-3:]}/{objid}.jpg"
    assert load_catalog(result.output_catalog, "gz2").rejected.empty

    with pytest.raises(ValueError, match=r"sdss cutout service serves \['jpeg'\].*--survey legacy"):
        download_images(DownloadImagesConfig(catalog=str(path), image_format="fits", **FAST))


# -- catalogs ------------------------------------------------------------------------------------------


def serve_catalogs(services) -> dict[str, bytes]:
    """Both registry sources, at the paths the real hosts use."""
    gz2 = gzip.compress(hart16_frame(6).to_csv(index=False).encode(), mtime=0)
    decals = decals_frame(5).to_csv(index=False).encode()
    services.files["/gz2_hart16.csv.gz"] = gz2
    services.files["/records/4573248/files/gz_decals_volunteers_5.csv"] = decals
    return {"gz2": gz2, "gz-decals": decals}


def test_catalog_registry_round_trip(services, tmp_path, monkeypatch):
    served = serve_catalogs(services)
    sha256 = hashlib.sha256(served["gz2"]).hexdigest()
    monkeypatch.setitem(dl.SOURCES, "gz2", dataclasses.replace(
        dl.SOURCES["gz2"], size=len(served["gz2"]), checksum=f"sha256:{sha256}"))
    config = DownloadCatalogConfig(source="gz2", output_dir=str(tmp_path / "gz2"), mirror=services.url, **FAST)

    result = download_catalog(config)
    assert result.url == f"{services.url}/gz2_hart16.csv.gz"
    assert result.path.read_bytes() == served["gz2"] and result.sha256 == sha256
    assert (result.downloaded, result.verified, result.n_rows) == (True, "sha256", 6)
    assert result.table["dr7objid"].tolist() == [str(i) for i in hart16_frame(6)["dr7objid"]]
    assert no_part_files(tmp_path)

    again = download_catalog(config)  # verified and kept, not fetched again
    assert not again.downloaded and len(services.log) == 1

    # the published .csv.gz is what `download images` and `convert --schema gz2` read
    monkeypatch.setenv("ZOOBOT_SDSS_URL", f"{services.url}/dr17/SkyServerWS/ImgCutout")
    images = download_images(DownloadImagesConfig(catalog=str(result.path), size=64, limit=4, **FAST))
    assert images.n_written == 4 and images.n_rows == 6
    assert len(load_catalog(images.output_catalog, "gz2").galaxies) == 4


def test_cut_off_catalog_download_resumes_where_it_stopped(services, tmp_path, monkeypatch):
    served = serve_catalogs(services)
    services.truncate_once.add("/records/4573248/files/gz_decals_volunteers_5.csv")
    monkeypatch.setenv("ZOOBOT_CATALOG_MIRROR", services.url)
    result = download_catalog(DownloadCatalogConfig(source="gz-decals", output_dir=str(tmp_path), **FAST))

    assert result.path.read_bytes() == served["gz-decals"] and result.verified == "columns only"
    assert result.n_rows == 5 and result.path.name == "gz_decals_volunteers_5.csv"
    (_, first, _), (_, second, headers) = services.log
    assert first == second == {"download": "1"}  # Zenodo's address, query kept
    assert headers["Range"] == f"bytes={len(served['gz-decals']) // 2}-"


def test_progress_off_a_terminal_ends_with_the_final_state(services, tmp_path, capsys):
    """click prints only the label when stderr is not a terminal; the final state follows it, for logs."""
    served = serve_catalogs(services)
    download_catalog(DownloadCatalogConfig(source="gz-decals", output_dir=str(tmp_path), mirror=services.url,
                                           **FAST), progress=True)
    size = len(served["gz-decals"]) / 1e6
    assert capsys.readouterr().err.splitlines() == [
        "gz_decals_volunteers_5.csv", f"gz_decals_volunteers_5.csv: {size:.1f} of {size:.1f} MB"]


def test_progress_on_a_terminal_is_one_redrawn_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    done = [0]
    bar = Progress("Cutouts", lambda: f"{done[0]} done", enabled=True)
    for done[0] in range(1, 4):
        bar.move_to(done[0], 3)
    bar.close()
    drawn = terminal.getvalue()
    assert "Cutouts" in drawn and "100%" in drawn and "3 done" in drawn
    assert "Cutouts: " not in drawn and drawn.count("\n") == 1  # no separate final line under the bar


def test_wrong_checksum_is_refused_with_both_digests(services, tmp_path, monkeypatch):
    served = serve_catalogs(services)
    monkeypatch.setitem(dl.SOURCES, "gz2", dataclasses.replace(dl.SOURCES["gz2"], checksum="sha256:" + "0" * 64))
    with pytest.raises(ChecksumError) as caught:
        download_catalog(DownloadCatalogConfig(source="gz2", output_dir=str(tmp_path), mirror=services.url, **FAST))
    message = str(caught.value)
    assert "expected " + "0" * 64 in message and hashlib.sha256(served["gz2"]).hexdigest() in message
    assert "zoobot.data.download.SOURCES" in message and "not kept" in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part


def test_catalog_errors_say_what_to_do(services, tmp_path):
    with pytest.raises(ValueError, match=r"unknown catalog source 'gz3'; known sources are \['gz-decals', 'gz2'\]"):
        DownloadCatalogConfig(source="gz3")
    with pytest.raises(ValueError, match="name the catalog to fetch"):
        DownloadCatalogConfig()
    with pytest.raises(DownloadError, match=r"HTTP 404") as caught:
        download_catalog(DownloadCatalogConfig(source="gz2", output_dir=str(tmp_path), mirror=services.url, **FAST))
    assert "attempts" not in str(caught.value) and len(services.log) == 1  # a 404 is not retried
    services.files["/gz2_hart16.csv.gz"] = b"<html>maintenance</html>"
    with pytest.raises(DownloadError, match="lacks columns|not a readable table"):
        download_catalog(DownloadCatalogConfig(source="gz2", output_dir=str(tmp_path), mirror=services.url, **FAST))
    assert list(tmp_path.iterdir()) == []


def test_image_errors_say_what_to_do(tmp_path):
    frame = decals_frame(2).drop(columns=["ra", "dec"])
    frame.to_csv(tmp_path / "votes.csv", index=False)
    with pytest.raises(ValueError, match=r"no 'ra' and 'dec' columns.*it has \['iauname'"):
        download_images(DownloadImagesConfig(catalog=str(tmp_path / "votes.csv")))
    with pytest.raises(ValueError, match="none of the id columns"):
        pd.DataFrame({"name": ["a"], "RA": [1.0], "DEC": [2.0]}).to_csv(tmp_path / "x.csv", index=False)
        download_images(DownloadImagesConfig(catalog=str(tmp_path / "x.csv")))
    with pytest.raises(ValueError, match=r"image_format must be one of.*workers must be between 1 and 8"):
        DownloadImagesConfig(catalog="x.csv", workers=50, image_format="png")
    with pytest.raises(ValueError, match="--image-format jpeg or --survey legacy"):
        DownloadImagesConfig(catalog="x.csv", survey="sdss", image_format="fits")
    (tmp_path / "catalog.csv").write_text("iauname,ra,dec\nJ1,1,2\n")
    with pytest.raises(ValueError, match="would overwrite the input catalog"):
        download_images(DownloadImagesConfig(catalog=str(tmp_path / "catalog.csv")))


# -- the command and its run ---------------------------------------------------------------------------


def test_cli_download_runs_are_logged(services, tmp_path, sqlite_tracking):
    from mlflow.tracking import MlflowClient

    from zoobot.cli.download import build

    serve_catalogs(services)
    services.behaviour = {"40.000000": "404"}
    runner = CliRunner()
    fast = ["--retries", "1", "--backoff", "0.01", "--timeout", "2"]
    result = runner.invoke(build(), ["catalog", "gz-decals", "--mirror", services.url, "--output-dir", "votes", *fast])
    assert result.exit_code == 0, result.output
    assert "gz_decals_volunteers_5.csv (5 galaxies" in result.output

    frame = pd.read_csv(tmp_path / "votes" / "gz_decals_volunteers_5.csv")
    frame["ra"] = [10.0, 20.0, 40.0, 50.0, 60.0]
    frame.to_csv(tmp_path / "votes" / "gz_decals_volunteers_5.csv", index=False)
    result = runner.invoke(build(), ["images", "--catalog", "votes/gz_decals_volunteers_5.csv", "--size", "32",
                                     "--base-url", f"{services.url}/viewer", *fast])
    assert result.exit_code == 0, result.output
    assert "4 cutouts downloaded, 0 already there, 1 failed" in result.output
    assert "row 3" in result.output and "HTTP 404" in result.output
    assert "Cutouts: 4 done, 1 failed, 0 remaining" in result.stderr  # the progress line's last state

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("Default").experiment_id],
                              filter_string="tags.step = 'download'", order_by=["attributes.start_time ASC"])
    assert [r.data.tags["download"] for r in runs] == ["catalog", "images"]
    assert all(r.info.status == "FINISHED" for r in runs)
    catalog_run, images_run = runs
    assert catalog_run.data.params["url"] == f"{services.url}/records/4573248/files/gz_decals_volunteers_5.csv?download=1"
    assert catalog_run.data.params["source"] == "gz-decals" and catalog_run.data.tags["schema"] == "decals"
    assert catalog_run.data.metrics["n_rows"] == 5
    assert catalog_run.inputs.dataset_inputs[0].dataset.name == "gz_decals_volunteers_5.csv"

    metrics = images_run.data.metrics
    assert (metrics["n_downloaded"], metrics["n_failed"], metrics["n_written"]) == (4, 1, 4)
    assert images_run.data.params["cutout_url"].startswith(f"{services.url}/viewer/jpeg-cutout?ra={{ra}}&dec={{dec}}")
    artifacts = {a.path for a in client.list_artifacts(images_run.info.run_id)}
    assert {"config.json", "download_failures.csv", "download_failures.json", "examples.png"} <= artifacts
    failures = pd.read_csv(client.download_artifacts(images_run.info.run_id, "download_failures.csv", str(tmp_path)))
    assert failures["reason"].tolist() == ["HTTP 404 No such cutout"]
    (dataset_input,) = images_run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "gz_decals_volunteers_5.csv" and dataset_input.tags[0].value == "catalog"
    assert images_run.data.tags["local_output"] == str((tmp_path / "votes").resolve())


def test_mlproject_download_entry_matches_the_cli():
    """Once MLproject declares `download`: `what` names a subcommand, every other declared parameter is
    an option of both subcommands with the same default, and the command passes each once."""
    from zoobot.cli.download import build

    entry = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"].get("download")
    if entry is None:
        pytest.skip("MLproject has no download entry point yet")
    group = build()
    words = shlex.split(entry["command"])
    assert words[:4] == ["python", "entrypoints/step.py", "download", "{what}"]
    assert set(group.commands) == {"catalog", "images"}
    passed = {w[2:]: words[i + 1] for i, w in enumerate(words) if w.startswith("--")}
    assert passed == {name: "{" + name + "}" for name in entry["parameters"] if name != "what"}
    for name, parameter in entry["parameters"].items():
        if name == "what":
            continue
        for command in group.commands.values():
            option = next(p for p in command.params if p.name == name)
            assert option.type.convert(str(parameter["default"]), option, None) == option.default, (name, command)
