# MetaPoint ablation (split 1, 1-shot): 2 layers in the meta and refine decoders
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(meta_decoder_layers=2, ref_decoder_layers=2)
