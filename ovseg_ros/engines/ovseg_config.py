"""OVSeg config group: the ``ovseg.*`` settings (torch-free, read by the schema)."""
from ..schema import ParamSpec

#: ``precision: auto`` resolves to fp32: bf16 kept 33.7-97.0 % of the fp32 labels (its
#: binarised mask crops amplify Swin's 1-2 % error; docs/benchmarks/cpu.md)
AUTO_LOW_PRECISION = False

#: settings of the OVSeg engine, in documentation order
PARAMS = (
    ParamSpec("ovseg.swin_model", "str", "swin_base_patch4_window12_384", "Proposal backbone "
       "architecture (the released model: Swin-B, window 12).",
       choices=("swin_base_patch4_window12_384", "ovseg_tiny_swin")),
    ParamSpec("ovseg.head_size", "str", "base",
       "Proposal head size (base = the released MaskFormer "
       "head: 256 channels, 6 decoder layers; tiny is for tests).", choices=("base", "tiny")),
    ParamSpec("ovseg.clip_model", "str", "ViT-L-14-quickgelu",
       "open_clip ViT CLIP architecture of the "
       "mask-adapted CLIP (OpenAI layout with QuickGELU); its weights come from ovseg.checkpoint."),
    ParamSpec("ovseg.checkpoint", "str", "",
       "Released OVSeg checkpoint (ovseg_swinbase_vitL14_ft_mpt.pth "
       "or its safetensors conversion): Swin-B, MaskFormer head and the fine-tuned CLIP; required "
       "unless random_init."),
    ParamSpec("ovseg.short_side", "int", 640,
       "Resize short side to this (small images are upscaled).",
       min=32, max=4096),
    ParamSpec("ovseg.max_size", "int", 2560, "Cap of the long side after resizing.",
       min=32, max=8192),
    ParamSpec("ovseg.num_queries", "int", 100, "Mask proposals (object queries).", min=1, max=1000),
    ParamSpec("ovseg.mask_prompt_depth", "int", 3,
       "Mask prompt depth of the CLIP ViT (patch embedding "
       "plus this many - 1 blocks).", min=1, max=64),
    ParamSpec("ovseg.mask_threshold", "float", 0.4,
       "A proposal's pixels with sigmoid above this form "
       "its CLIP crop; proposals without any are not sent to CLIP.", min=0.0, max=1.0,
       runtime=True),
    ParamSpec("ovseg.clip_ensemble_weight", "float", 0.7,
       "Ensemble: head^(1-w) * clip^w for proposals "
       "with a crop (reference: 0.7; 0.6 Pascal Context, 0.45 VOC).", min=0.0, max=1.0,
       runtime=True),
    ParamSpec("ovseg.min_thing_area", "int", 64, "Panoptic heuristic: smallest connected component "
       "(pixels) kept as a thing instance.", min=0, max=1 << 30, runtime=True),
)
