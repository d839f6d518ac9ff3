"""Video → sequences: PyAV decoding and frame sampling (decode.py), frame backbones
(backbones.py), the per-frame feature cache (cache.py) and a generator of
synthetic action videos in the UCF101 layout (make_videos.py).

Kept free of heavy imports: the data registry imports this package on first lookup.
"""
