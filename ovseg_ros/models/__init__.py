"""Network modules of the mask-transformer engines (FC-CLIP, MAFT+).

Pure PyTorch (no detectron2, no compiled extension). Attribute names follow
the reference implementations so released checkpoints load with strict key
checking and no renaming table.
"""
