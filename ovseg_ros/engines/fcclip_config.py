"""FC-CLIP config group: the ``fcclip.*`` settings (torch-free, read by the schema)."""
from ..schema import ParamSpec

#: ``precision: auto`` resolves to fp32: with the calibrated parity weights bf16 kept
#: 64.7-88.6 % of the fp32 labels at 480 / 640, below the 99.5 % bar
#: (scripts/measure_auto_precision.py, docs/benchmarks/cpu.md)
AUTO_LOW_PRECISION = False

#: settings of the FC-CLIP engine, in documentation order
PARAMS = (
    ParamSpec("fcclip.clip_model", "str", "convnext_large_d_320",
              "open_clip ConvNeXt CLIP backbone."),
    ParamSpec("fcclip.clip_pretrained", "str", "laion2b_s29b_b131k_ft_soup",
              "open_clip pretrained tag."),
    ParamSpec("fcclip.clip_checkpoint", "str", "", "Local CLIP checkpoint (optional)."),
    ParamSpec("fcclip.checkpoint", "str", "",
              "FC-CLIP head checkpoint (sem_seg_head.*, void_embedding); required unless "
              "random_init."),
    ParamSpec("fcclip.short_side", "int", 800, "Resize short side to this.", min=32, max=4096),
    ParamSpec("fcclip.max_size", "int", 1333,
              "Cap of the long side after resizing.", min=32, max=8192),
    ParamSpec("fcclip.deformable_sampling", "str", "gather",
              "Pixel decoder's deformable-attention sampling, both exact: 'gather' (one "
              "weighted gather, the fast eager form) or 'reference_order' (grid_sample per "
              "level, all samples summed in one reduction: the reference code's CPU path bit "
              "for bit, a ~1.5x slower pixel decoder; docs/fcclip.md).",
              choices=("gather", "reference_order")),
    ParamSpec("fcclip.num_queries", "int", 250, "Object queries.", min=1, max=1000),
    ParamSpec("fcclip.geometric_alpha", "float", 0.4,
              "Ensemble weight of the out-of-vocabulary branch for seen classes.",
              min=0.0, max=1.0, runtime=True),
    ParamSpec("fcclip.geometric_beta", "float", 0.8,
              "Ensemble weight of the out-of-vocabulary branch for unseen classes.",
              min=0.0, max=1.0, runtime=True),
    ParamSpec("fcclip.object_mask_threshold", "float", 0.0,
              "Panoptic: queries scoring below this are dropped.", min=0.0, max=1.0, runtime=True),
    ParamSpec("fcclip.overlap_threshold", "float", 0.8,
              "Panoptic: segments keeping less than this fraction of their mask are dropped.",
              min=0.0, max=1.0, runtime=True),
)
