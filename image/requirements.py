"""Print the requirements of pyproject.toml, one a line, for the image's dependency layer.

    python3 requirements.py pyproject.toml none      # [project] dependencies
    python3 requirements.py pyproject.toml minilm    # and the minilm extra (torch, the model)

Run by the Dockerfile's builder stage (any Python 3.11+, only the standard library), so the
dependencies install in a layer of their own and a code change rebuilds only the last steps.
"""

import sys
import tomllib

MODELS = ("none", "minilm")  # minilm: the extra of that name (torch, sentence-transformers, the model)


def main(pyproject: str, model: str) -> int:
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    extras = project.get("optional-dependencies", {})
    if model not in MODELS:
        print(f"MODEL={model}: use one of {', '.join(MODELS)}", file=sys.stderr)
        return 2
    for requirement in project["dependencies"] + (extras[model] if model != "none" else []):
        print(requirement)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: requirements.py PYPROJECT MODEL", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
