"""Locate or download the bright-field demo images (dwaithe U-Net density-estimation set).

The demo uses 50 real bright-field microscopy images (``001cells.png`` .. ``050cells.png``)
and their dot annotations (``001dots.png`` .. ``050dots.png``) from
https://github.com/dwaithe/U-net-for-density-estimation (folder ``dataset02/``). The
repository states no licence, so the files are never copied into this package: they are
looked up in a shared data folder first, and otherwise downloaded at a pinned commit into
a per-user cache, every file verified against the sha256 digests below.

Lookup order (:func:`locate_brightfield`):

1. ``$PSEUDOCELL_DATA_DIR/dwaithe-brightfield-cells``;
2. ``../shared/data/dwaithe-brightfield-cells`` relative to the working directory;
3. ``<repo>/../shared/data/dwaithe-brightfield-cells`` next to the source checkout;
4. the download cache ``<cache>/dwaithe-brightfield-cells-<commit[:8]>`` (see
   :func:`default_cache_dir`), filled by :func:`download_brightfield` when allowed.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from pseudocell.errors import DataUnavailableError

__all__ = [
    "BRIGHTFIELD_NAME",
    "BRIGHTFIELD_COMMIT",
    "BRIGHTFIELD_BASE_URL",
    "BRIGHTFIELD_SHA256",
    "find_shared_brightfield",
    "default_cache_dir",
    "download_brightfield",
    "locate_brightfield",
]

logger = logging.getLogger(__name__)

#: Folder name of the demo set, both in the shared data folder and (with a suffix) in the cache.
BRIGHTFIELD_NAME = "dwaithe-brightfield-cells"

#: Pinned commit of https://github.com/dwaithe/U-net-for-density-estimation.
BRIGHTFIELD_COMMIT = "db16962a01b50f5e3f2edd645a31dd1cb7fe3998"

#: Base URL the files are downloaded from; ``<base>/<name>`` is one file.
BRIGHTFIELD_BASE_URL = (
    "https://raw.githubusercontent.com/dwaithe/U-net-for-density-estimation/"
    f"{BRIGHTFIELD_COMMIT}/dataset02/"
)

#: sha256 of every demo file (50 images + 50 dot masks), sorted by name.
BRIGHTFIELD_SHA256: dict[str, str] = {
    "001cells.png": "a63ba9722727a9313e289c4ffd09503b91eb43314fd4c48a11767bb6fb323024",
    "001dots.png": "3a4a92cab55a7751d0c38c57f2a8833e60443f983477f6e1cc2144b2bdc22cca",
    "002cells.png": "1d7047770cde7b5ec50acd64d9e20f5d802542f927432e9cf963d727ec080083",
    "002dots.png": "652b05196003e5e255c280a12907d25b6bb83540d2a5fe0a2d65847fe2ce50c8",
    "003cells.png": "2308d4a0f52f27e96c0d816ff8091033bb437878ceffafc3f2a3ed00177af749",
    "003dots.png": "2828c93402e86dd6c8eab875936c497160e62a46574e14633e078ba15b19e43e",
    "004cells.png": "26f54c3b79f247a2ff95f707b3d8054104720d47ec785e231dc97278376e839f",
    "004dots.png": "8483b53c67b8a446ed3f36e54c35d36a5ba4c42fc4d46d7b95b331621be75405",
    "005cells.png": "e947d95cd7151fdcf079bc2b5d0413c84f5f781ecc4a0fa5c77cf71c52f33615",
    "005dots.png": "d5e1778e384445b9a64088dcfe7c47bd04010b4d9b3612f01995de4eddf914f8",
    "006cells.png": "2c2b0a979677cde29c29fd90a8879841070b72a84c2c19059e712b309c7e6003",
    "006dots.png": "5c38933cf0e57b68cfdf130736fb4cfb48fdc2511c27c6f8f6f542642e563f9f",
    "007cells.png": "120f379b140c8ee506e64ab7704d5042be619903592a95fe4c54f144587e5b0f",
    "007dots.png": "ac9cb7b2a623d8f127c19e3513b3849ac2144045cf4f74b6f4de2947a10b1557",
    "008cells.png": "534005756633f6a4978d44a794cba8faa0b39f91eb5c328bf137a04651c26352",
    "008dots.png": "03902c7c6cf087783b45836249c732738a482deac99c4280eef207f6f2dcac4c",
    "009cells.png": "bafc9397274fc00c70cfbb6adac6f204f76daf455c338c2f623062de30cc8a6c",
    "009dots.png": "4c603834d78cf26f5eed14321d0fa7fe8daefd143baf65043e6c1fe095ecb9ec",
    "010cells.png": "8b1333438ec3a025c871ba93d1a1e6d677f0a3d78113205e051be706adc8c802",
    "010dots.png": "b6569bc03302bcba497f436e0623ff7f9e100534e9cd287734fecb81a8101d81",
    "011cells.png": "9458c75e82e7d75896ee7e18077b35ee45ff308776bbba3fa3b1e11bb3d3dcf8",
    "011dots.png": "3520dea613c96a264a879a8dd60f6367e1789c84109ba18622319ad7dd107e16",
    "012cells.png": "3fce965800c16811bb03bd65088f226e11d52c429d3c20f43231a3c9e8f1d180",
    "012dots.png": "3a53282816769dd0dced42b27f83dfcaad102a15b5ae3d67b4cdda02d8dee53e",
    "013cells.png": "1dea7d8d58f616b4dba28a5193fcf4ce3a1a638850b72ee4dfcd570eee414efd",
    "013dots.png": "21ab36a322fe330b8a72644f5e0fe4d42614991f0f925f36568f024637287971",
    "014cells.png": "661deb19d28d02aa62cffa5a1ce3cc4880c0f665bd747220d70d615f05beebbf",
    "014dots.png": "64de00441c3154999d850a33467edebc228c3b3c26e9ef34e307a72a825c31ee",
    "015cells.png": "d2f6b82b31ce785ce05e495fe381f8e74cea495d7307d2398620eb03a2edd0cc",
    "015dots.png": "40080f93ba71a8a4892e7f3f4bdff0d597225f75af5bf279f48398576d01ece1",
    "016cells.png": "8ac2399eb1f21b90e5448ab3e191cd7ffc7fc9c6fa6004af86e56379f4f509a8",
    "016dots.png": "39339367832f85af228749bba087c293aac8c53cd0ac7aa1fe12bc19899da986",
    "017cells.png": "481c84eb1529de4d1475d7443f00a1325bd6a52252ea98cbeeb6c211f339e460",
    "017dots.png": "d2de367c6bef676ccf723d3ac3e4a6fb52235ef8c88d0819d9c571c60a50036b",
    "018cells.png": "c5b440458b203ad10eafae2a1c84e7bc32811101f7e064d1612c5665cf54992e",
    "018dots.png": "18380787ff46452028551ea71fa66dc2d472c1e1380eba523b247a1dbb53e9c0",
    "019cells.png": "7aecec7f683f19a66fb3bba940195f0d536d667a64bddac24ce39418e7ef9252",
    "019dots.png": "3b48304b7ef547c4016232ef0decefda04706f1a2e892ff9960c690f656cc720",
    "020cells.png": "7d9c3d4e34b165b9bf026f10a1846b43e4b35e30bf27c49f42bf4e8a0a40299a",
    "020dots.png": "95740bbd723f8f11dabc41404dd082f7da404744b695b89d6b4c665506d549c8",
    "021cells.png": "a1d9a2b36ad2290e7a90ac1634de4d354426705eef3b747443ea6f3ebb49ecff",
    "021dots.png": "416ef654040af250d47a103a52064461f991ffb3f7586eccbb1c1f6c6ce18204",
    "022cells.png": "2436edc850f3e4b5b40d553b365dfab0f29ac6dd91515b9b9e70daff3e9f285e",
    "022dots.png": "7ba9bde25e220914cc408d7adf9d548f8899b12a787d15e01cf133d8c353a744",
    "023cells.png": "694436fcb9cf1cfa676a88d4413d4d5f5a68fc9aa08614d921af21cca3c4b50a",
    "023dots.png": "2b3a5e08a79d7b618bcb9ebbf26809949346577cef85298ae29baa6fb0fb704d",
    "024cells.png": "c5dc22d5d35f5378482123ff9c7622ec0b5b041c7819db72083a2a901d21235a",
    "024dots.png": "c61c7e8b34531ea12f6258e7a3719cfa6f6f02a27833933216f32980670c3c3d",
    "025cells.png": "eaf4a029b8cb1058e36be6ddf1692fcd2ce6fb59ced9c4ce5cee05b0b198fc25",
    "025dots.png": "a48c15db4c0187f5ba2e975db272bb2392c5d917ff4c95b8b0e377ccee2ec7c5",
    "026cells.png": "8877963d45e3be2af5881d7aebe260edcdf80fac115715933b9f09ba21a0f35a",
    "026dots.png": "05f325708982e1e3f10e0d168deff7cf5724fb683f2ca4ded50211d2cef930dc",
    "027cells.png": "de6fe5c0a5131485974ea97fadb76b8e52503cb4fa28584fd06046d72916e6b6",
    "027dots.png": "18c6fb7630ce100dd4253e0de7b76f356deb94c9dce74049176abeb2e7c474c1",
    "028cells.png": "d4bbcdc355711f5ac530d897865160a1a10ae04ccd811b72e9492eddbebf76cf",
    "028dots.png": "974c8288a49f86974fd3aca524d88b99ebee9cf627622a53baf22b004af6f046",
    "029cells.png": "c7932428c7628d3438b95b9f1a8d042ba9fd17ec23917f6ac9c44160993b5759",
    "029dots.png": "a424defc6178da715f76e922a841c57947a37fde96a6ab42c44a74386da879bc",
    "030cells.png": "f7004585f900d8f471522f2db6b586db0643f44ee756d8c4b1bad1e758593ada",
    "030dots.png": "823142030541c7e0240b41e35185dae713f782a71fdc72459dad287110f5fc23",
    "031cells.png": "5c101968576e4596aa72a821e3015441e39a89d0d0db08d099ac7fb689dd01a7",
    "031dots.png": "455133f2f126e2c66f4a2b91415c1e3c5a022100b75a4b97231a39eb685c45d4",
    "032cells.png": "996867099540581ecda0bc8da48fc91bf7a55c4ae312b398910dfd8d699de8f4",
    "032dots.png": "1a90a9d4942f9fabd602d85d9c41ca96e2d2b1500edca1f31fde49c64d529993",
    "033cells.png": "2901133f412db106dcfbebb55b40a0d16edf35bfa158461633223b7796999bca",
    "033dots.png": "fb43fefc23c9f708a3cbce6f4015e24dc145a3f9f5005af667dbe601a2f58067",
    "034cells.png": "3de9623407cbed9c9521dc41798553efd74c7c640cf2314e7b041bf0c027c130",
    "034dots.png": "7a5fbd8de762b51cf763c273b2d6a8510e23d6072b6f17f3b415aa36021c360f",
    "035cells.png": "42660af3f86a7515810c8afea12d9b1490091154a494fc7b688a2ac76fcb85de",
    "035dots.png": "68a92163d846bc9b7af94a5611f8fe9320b33983cbd7b8a1fd1246e2c3abb15f",
    "036cells.png": "32f0b9c799882dbaeed17ce460f36c6419580dd117daadaee39ae3ecccf386a4",
    "036dots.png": "df211644e2e36a551dc31db2cf087d81c9d01e834502cf07d93591fca97c91eb",
    "037cells.png": "0c3f156660cbaaef98c9eab2334a3b925819c49db7a5c8fdfe92538e0efd76d2",
    "037dots.png": "02d5348dec61cad10d5e224a5fe948e3b244b0d527312ee7476a56be00f8c9de",
    "038cells.png": "dc4e67c10e388dccfedbe903ba5d0c7327af7dceb67172beba78c8f63d99792b",
    "038dots.png": "d97423f6460726d0ac4fcbd8795dd7f9f28bc268081e1f257eb4334028b58f18",
    "039cells.png": "ac266896881556ac880a9aea2edb8c6d9e4dcb2c8196b908208973a9f973f859",
    "039dots.png": "f93eae55deed1504273dcc574a66d76c8f255dbf6271074d9169c01b663d1879",
    "040cells.png": "04e21b4edc5e57fae740c256ea2a5a9ee89e587aa606248a18f7ac2e12abd633",
    "040dots.png": "eb49f58132af5e84f6b507c5ddc37017f13028fc4704927e42badb136a5f046c",
    "041cells.png": "e33af86e4331af8c555925a0fd17a81706204e114dad63e2262db1b76b7329fc",
    "041dots.png": "bce1895f7cb161477e2ced1cf0434b16158a65ae2143f5a6940ad3a1547e07c6",
    "042cells.png": "174a4bf2a695a2f9e87e01fdc48b7b03b63f0f137729cb2da3403dca8239f6a8",
    "042dots.png": "899d7b7d102ad338434e1993f907d493d08d44f26a4a3d5c95e8d740aad4dbe6",
    "043cells.png": "9922f94b57c541bea61d0d34ac59f6fbafc875bbd376e20f6dd9e371caa33b8c",
    "043dots.png": "2412b9ad1199df294e5c705e4bad39d534ef1fdcadb39fd884040450ac690b55",
    "044cells.png": "3493511843e4ce59928943cee8bb93c937098bc553315fc4a5e6d744e5ed9e95",
    "044dots.png": "0b299f397d33a9284aa3cd2930f4e04880d63200ce87f115b7669a86a01d019d",
    "045cells.png": "acc28f12446a16407c9dca5fc00e2959dc199c73521910a542530cd67d518773",
    "045dots.png": "bdcafa49007c058b0697a19a4a46b924520d16c0fb581f20c18881e7b6bd2584",
    "046cells.png": "d48e871cd8280a31ce3c0701851c8181be488bff1491a0a8797b963b9e976872",
    "046dots.png": "a3c2041a71cfb75642e5ed703e4342c73feea77325812ef18d4ab3f8e2980f67",
    "047cells.png": "0fa9954ee3d683d83f766fad082ef47ed2fc2512e0b21580a7bad020da144a3b",
    "047dots.png": "8cf22d0e5b88f88ba8f05373ae1998ebb991c78f213eee4af959811050e1a650",
    "048cells.png": "162bde3c74187ef2d39945dcc3df22dd617e9539037f136f785261e7b4e04c6c",
    "048dots.png": "4bf8a319a11a01169f6aa354f77b393d6983ed27db0ef05f313715ece0ee14d7",
    "049cells.png": "3700895c1897570ff97710fdf6b79eae5f39019ed374ee2a19cbe0743773a689",
    "049dots.png": "6c6bac4fef346c5ecc57d801279de3870a4908d74e9c445d83d04368608714a9",
    "050cells.png": "d0560e73948c99ceaeddcdb6e4d1074924232f18449ea9b499b0481d4299d79d",
    "050dots.png": "c98379e999ae65b93f2c1e991e22312db629b724558a2ddc6e6e4f5f4b008f34",
}

_ENV_DATA_DIR = "PSEUDOCELL_DATA_DIR"
_ENV_CACHE = "PSEUDOCELL_CACHE"
_CHUNK = 1 << 16


def _has_all_files(folder: Path, names: Mapping[str, str] | list[str]) -> bool:
    """Tell whether ``folder`` is a directory holding every file in ``names``."""
    return folder.is_dir() and all((folder / name).is_file() for name in names)


def find_shared_brightfield() -> Path | None:
    """Find a complete shared copy of the demo set on disk.

    Candidates, in order: ``$PSEUDOCELL_DATA_DIR/dwaithe-brightfield-cells``;
    ``../shared/data/dwaithe-brightfield-cells`` relative to the current working
    directory; ``shared/data/dwaithe-brightfield-cells`` under each ancestor of this
    module's folder (which covers ``<repo>/../shared/data/...`` for a source checkout).
    A candidate is accepted only if all 100 files of :data:`BRIGHTFIELD_SHA256` exist
    (checksums are not verified here).

    Returns
    -------
    pathlib.Path or None
        The first complete folder found, or ``None`` when there is none.
    """
    candidates: list[Path] = []
    env = os.environ.get(_ENV_DATA_DIR)
    if env:
        candidates.append(Path(env).expanduser() / BRIGHTFIELD_NAME)
    candidates.append(Path.cwd().parent / "shared" / "data" / BRIGHTFIELD_NAME)
    here = Path(__file__).resolve()
    candidates.extend(parent / "shared" / "data" / BRIGHTFIELD_NAME for parent in here.parents)
    seen: set[Path] = set()
    for candidate in candidates:
        if candidate in seen:
            continue
        seen.add(candidate)
        if _has_all_files(candidate, BRIGHTFIELD_SHA256):
            logger.debug("using shared demo data at %s", candidate)
            return candidate
        if candidate.exists():
            logger.debug("ignoring incomplete demo data folder %s", candidate)
    return None


def default_cache_dir() -> Path:
    """Return the download cache root.

    Returns
    -------
    pathlib.Path
        ``$PSEUDOCELL_CACHE`` if set, else ``$XDG_CACHE_HOME/pseudocell`` if
        ``XDG_CACHE_HOME`` is set, else ``~/.cache/pseudocell``. Not created here.
    """
    env = os.environ.get(_ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "pseudocell"
    return Path.home() / ".cache" / "pseudocell"


def _cache_folder(cache_dir: Path | None) -> Path:
    """Return the versioned folder of the demo set inside the cache root."""
    root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return root / f"{BRIGHTFIELD_NAME}-{BRIGHTFIELD_COMMIT[:8]}"


def _sha256_file(path: Path) -> str:
    """Return the hex sha256 digest of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_valid(path: Path, sha256: str) -> bool:
    """Tell whether ``path`` is a file whose sha256 equals ``sha256``."""
    try:
        return path.is_file() and _sha256_file(path) == sha256.lower()
    except OSError:
        return False


def _offline_hint() -> str:
    """Return the fix to suggest when the download is impossible."""
    data_dir = os.environ.get(_ENV_DATA_DIR) or "/path/to/data"
    return (
        f"Offline? Copy the folder {BRIGHTFIELD_NAME}/ (the 100 files {min(BRIGHTFIELD_SHA256)}"
        f" .. {max(BRIGHTFIELD_SHA256)}) into PSEUDOCELL_DATA_DIR={data_dir} "
        f"(so that $PSEUDOCELL_DATA_DIR/{BRIGHTFIELD_NAME}/ holds them), "
        "or run with network access."
    )


def _file_url(base_url: str, name: str) -> str:
    """Join the base URL and a file name."""
    return base_url.rstrip("/") + "/" + urllib.parse.quote(name)


def _download_one(url: str, name: str, expected: str, folder: Path, timeout: float) -> None:
    """Download ``url`` into ``folder/name`` atomically, verifying its sha256.

    The content goes to a temporary file in ``folder``, which is renamed to ``name`` only
    once complete and verified; on any failure the temporary file is removed.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "pseudocell"})
    tmp_path: Path | None = None
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length_header = response.headers.get("Content-Length")
                fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
                tmp_path = Path(tmp_name)
                digest = hashlib.sha256()
                received = 0
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
                        received += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            raise DataUnavailableError(
                f"could not download {url}: HTTP {exc.code} {exc.reason}. {_offline_hint()}"
            ) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DataUnavailableError(
                f"could not download {url}: {cause!s} ({type(exc).__name__}). {_offline_hint()}"
            ) from exc

        if length_header is not None and length_header.isdigit() and received != int(length_header):
            raise DataUnavailableError(
                f"could not download {url}: connection closed after {received} of "
                f"{length_header} bytes. {_offline_hint()}"
            )
        got = digest.hexdigest()
        if got != expected.lower():
            raise DataUnavailableError(
                f"checksum mismatch for {name} downloaded from {url}: expected sha256 "
                f"{expected.lower()}, got {got}. The file was discarded; the source may have "
                "changed or the download was altered (proxy?). Retry, or copy the verified "
                "folder into PSEUDOCELL_DATA_DIR (so that "
                f"$PSEUDOCELL_DATA_DIR/{BRIGHTFIELD_NAME}/ holds the files)."
            )
        os.replace(tmp_path, folder / name)
        tmp_path = None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def download_brightfield(
    cache_dir: Path | None = None,
    *,
    base_url: str = BRIGHTFIELD_BASE_URL,
    files: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the demo set into the cache, verifying every file's sha256.

    Files already in the cache with the right checksum are kept; missing or corrupt ones
    are (re-)downloaded. Each file is written to a temporary file in the target folder and
    renamed into place only once verified, so an interrupted run never leaves a partial
    file under a final name.

    Parameters
    ----------
    cache_dir : pathlib.Path, optional
        Cache root; defaults to :func:`default_cache_dir`. Files go to
        ``<cache_dir>/dwaithe-brightfield-cells-<commit[:8]>/``.
    base_url : str, optional
        URL prefix; file ``name`` is fetched from ``<base_url>/<name>``.
    files : dict of str to str, optional
        File name -> expected sha256 (hex); defaults to :data:`BRIGHTFIELD_SHA256`.
    timeout : float, optional
        Socket timeout in seconds for each request.

    Returns
    -------
    pathlib.Path
        The folder holding every verified file.

    Raises
    ------
    DataUnavailableError
        If the cache folder cannot be created, a request fails (offline, HTTP error,
        truncated transfer), or a downloaded file's checksum does not match.
    ValueError
        If a file name in ``files`` is not a plain file name.
    """
    wanted = dict(BRIGHTFIELD_SHA256 if files is None else files)
    for name in wanted:
        if not name or Path(name).name != name or name in {".", ".."}:
            raise ValueError(f"files: {name!r} is not a plain file name")
    folder = _cache_folder(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataUnavailableError(
            f"cannot create the demo data cache {folder}: {exc}. Set PSEUDOCELL_CACHE to a "
            "writable folder, or copy the data into PSEUDOCELL_DATA_DIR."
        ) from exc

    total = len(wanted)
    fetched = 0
    for index, (name, expected) in enumerate(sorted(wanted.items()), start=1):
        target = folder / name
        if _is_valid(target, expected):
            logger.debug("file %d/%d %s: cached", index, total, name)
            continue
        if target.exists():
            logger.warning("file %d/%d %s: cached copy has a wrong checksum, re-downloading",
                           index, total, name)
        url = _file_url(base_url, name)
        logger.info("file %d/%d %s: downloading %s", index, total, name, url)
        _download_one(url, name, expected, folder, timeout)
        fetched += 1
    logger.info(
        "demo data ready in %s (%d downloaded, %d cached)", folder, fetched, total - fetched
    )
    return folder


def locate_brightfield(
    *,
    download: bool = True,
    cache_dir: Path | None = None,
    base_url: str = BRIGHTFIELD_BASE_URL,
) -> Path:
    """Return a folder holding the 100 demo files.

    Parameters
    ----------
    download : bool, optional
        Whether to download missing files into the cache when no shared copy exists.
    cache_dir : pathlib.Path, optional
        Cache root; defaults to :func:`default_cache_dir`.
    base_url : str, optional
        URL prefix passed to :func:`download_brightfield`.

    Returns
    -------
    pathlib.Path
        The shared folder (:func:`find_shared_brightfield`) if there is one, else the
        verified cache folder.

    Raises
    ------
    DataUnavailableError
        If there is no shared copy and the cache is incomplete or corrupt while
        ``download`` is false, or if the download fails.
    """
    shared = find_shared_brightfield()
    if shared is not None:
        return shared
    if download:
        return download_brightfield(cache_dir, base_url=base_url)
    folder = _cache_folder(cache_dir)
    bad = [
        name
        for name, sha in sorted(BRIGHTFIELD_SHA256.items())
        if not _is_valid(folder / name, sha)
    ]
    if bad:
        raise DataUnavailableError(
            f"demo data {BRIGHTFIELD_NAME} not found: no shared copy, and the cache {folder} "
            f"lacks {len(bad)} of {len(BRIGHTFIELD_SHA256)} verified files (first: {bad[0]}), "
            f"and downloading is disabled. Allow the download ({BRIGHTFIELD_BASE_URL}), or copy "
            "the folder into PSEUDOCELL_DATA_DIR (so that "
            f"$PSEUDOCELL_DATA_DIR/{BRIGHTFIELD_NAME}/ holds the 100 files)."
        )
    return folder
