"""Segment images with an FCN deploy net and its weights.

    python infer.py --deploy models/voc-fcn8s/deploy.prototxt \
        --weights fcn8s-heavy-pascal.caffemodel image.jpg --out out_dir

The logic lives in weights/infer.py (also `python -m weights infer`).
"""
import sys

from weights.infer import main

if __name__ == "__main__":
    sys.exit(main())
