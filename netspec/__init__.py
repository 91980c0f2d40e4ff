"""NetSpec scripts for the reference FCN models and their base nets.

Each model in `netspec.models` is a short declaration (backbone, head,
dataset, solver) built from the shared pieces in `backbones`, `heads`,
`datasets` and `solver`; `python -m netspec --out models <name>` writes its
prototxts.
"""
