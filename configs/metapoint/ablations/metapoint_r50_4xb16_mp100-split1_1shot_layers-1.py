# MetaPoint ablation (split 1, 1-shot): 1 layer in the meta and refine decoders
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(meta_decoder_layers=1, ref_decoder_layers=1)
