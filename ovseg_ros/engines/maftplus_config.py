"""MAFT+ config group: the ``maftplus.*`` settings (torch-free, read by the schema)."""
from ..schema import ParamSpec

#: ``precision: auto`` resolves to fp32: with the calibrated parity weights bf16 kept
#: 82.8-92.1 % of the fp32 labels at 480 / 640 (semantic variant), below the 99.5 % bar
#: (scripts/measure_auto_precision.py, docs/benchmarks/cpu.md)
AUTO_LOW_PRECISION = False

#: settings of the MAFT+ engine, in documentation order
PARAMS = (
    ParamSpec("maftplus.clip_model", "str", "convnext_large_d_320",
              "open_clip ConvNeXt CLIP backbone (its visual trunk is replaced by the fine-tuned "
              "one in maftplus.checkpoint)."),
    ParamSpec("maftplus.clip_pretrained", "str", "laion2b_s29b_b131k_ft_soup",
              "open_clip pretrained tag (text tower and CLIP head)."),
    ParamSpec("maftplus.clip_checkpoint", "str", "", "Local CLIP checkpoint (optional)."),
    ParamSpec("maftplus.checkpoint", "str", "",
              "MAFT+ checkpoint (sem_seg_head.*, void_embedding, cdt.*, "
              "backbone.clip_model.visual.*); required unless random_init."),
    ParamSpec("maftplus.cdt_variant", "str", "semantic",
              "Content-Dependent Transfer form: 'semantic' (LN(t + Linear(attn)), maftp_l.pth) or "
              "'panoptic' (t + LN(Linear(attn)), maftp_l_pano.pth).",
              choices=("semantic", "panoptic")),
    ParamSpec("maftplus.cdt_per_pixel", "bool", False,
              "How the CDT sees the image: false (the released weights' form) reshapes the "
              "stride-32 CLIP map channel-major as the reference code does, which scrambles "
              "channels and positions; true projects each pixel's own features (moves 2-4 % of "
              "semantic labels with the released weights, docs/fcclip.md)."),
    ParamSpec("maftplus.short_side", "int", 800, "Resize short side to this.", min=32, max=4096),
    ParamSpec("maftplus.max_size", "int", 1333,
              "Cap of the long side after resizing.", min=32, max=8192),
    ParamSpec("maftplus.deformable_sampling", "str", "gather",
              "Pixel decoder's deformable-attention sampling, both exact: 'gather' (one "
              "weighted gather, the fast eager form) or 'reference_order' (grid_sample per "
              "level, all samples summed in one reduction: the reference code's CPU path bit "
              "for bit, a ~1.5x slower pixel decoder; docs/fcclip.md).",
              choices=("gather", "reference_order")),
    ParamSpec("maftplus.num_queries", "int", 100, "Object queries.", min=1, max=1000),
    ParamSpec("maftplus.object_mask_threshold", "float", 0.2,
              "Panoptic: queries scoring below this are dropped.", min=0.0, max=1.0, runtime=True),
    ParamSpec("maftplus.overlap_threshold", "float", 0.7,
              "Panoptic: segments keeping less than this fraction of their mask are dropped.",
              min=0.0, max=1.0, runtime=True),
)
