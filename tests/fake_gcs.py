"""A fake GCS bucket on localhost for the `gs://` tests (a helper module, not a test module).

`serve()` starts gcp-storage-emulator (the GCS JSON API, in memory, bucket `bucket`) in its own
process and yields the environment that points every client of a run at it:

- gcsfs (score_jax.storage, TensorBoard events through it, and etils.epath inside Orbax):
  STORAGE_EMULATOR_HOST, anonymous credentials (FSSPEC_GCS_TOKEN), and
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: gcsfs otherwise asks the Storage Control gRPC API,
  which the emulator lacks, for each bucket's layout and waits out a 60 s timeout before
  falling back to plain GCS;
- tensorstore (Orbax's arrays): TENSORSTORE_GCS_HTTP_URL, and GOOGLE_AUTH_TOKEN_FOR_TESTING so
  it sends a fixed bearer token instead of looking for credentials.
"""

import contextlib
import os
import socket
import subprocess
import sys
import textwrap

BUCKET = "bucket"

# GCS sends an object's generation as `x-goog-generation` with its bytes; the emulator does not,
# and tensorstore then fails to read back an OCDBT manifest ("Malformed StorageGeneration"). The
# download handler is wrapped before the server module captures it in its routing table.
_SERVER = textwrap.dedent(
  """
  import sys, time
  from gcp_storage_emulator.handlers import objects

  def with_generation(download):
    def handler(request, response, storage, *args, **kwargs):
      download(request, response, storage, *args, **kwargs)
      try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      except Exception:  # no such object: the handler answered 404
        return
      response["x-goog-generation"] = obj["generation"]
      response["x-goog-metageneration"] = obj["metageneration"]
    return handler

  objects.download = with_generation(objects.download)
  from gcp_storage_emulator.server import create_server
  server = create_server("127.0.0.1", int(sys.argv[1]), in_memory=True, default_bucket=sys.argv[2])
  server.start()
  print("ready", flush=True)
  while True:
    time.sleep(3600)
  """
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
  """The variables that send gcsfs, google-cloud-storage and tensorstore to `url`."""
  return {
    "STORAGE_EMULATOR_HOST": url,
    "FSSPEC_GCS_TOKEN": "anon",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    "TENSORSTORE_GCS_HTTP_URL": url,
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",
  }


@contextlib.contextmanager
def serve():
  """Runs the emulator; yields client_env(its URL), also set in os.environ meanwhile."""
  port = _free_port()
  proc = subprocess.Popen(
    [sys.executable, "-c", _SERVER, str(port), BUCKET],
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,  # one traceback per client that hangs up early: noise
    text=True,
  )
  try:
    if proc.stdout.readline().strip() != "ready":
      raise RuntimeError(f"gcp-storage-emulator did not start (exit code {proc.poll()})")
    env = client_env(f"http://127.0.0.1:{port}")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
      import gcsfs  # noqa: PLC0415  (after the variables: gcsfs reads one at import)

      gcsfs.GCSFileSystem.clear_instance_cache()  # no client of an earlier emulator
      yield env
    finally:
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
  finally:
    proc.kill()
    proc.wait()
