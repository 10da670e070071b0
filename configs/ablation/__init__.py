"""The paper's ablation rows, one config each (`configs/ablation/<row>.py[:dataset]`).

Every row starts from `configs/full_model.py`'s dataset config (IRSTD-1k by default) and
sets the loss and spatial fields explicitly, so a row reads on its own:

| row | loss | spatial attention | E0 convs |
|---|---|---|---|
| a0_mshnet_sls | L2 (SLS), mean location | cbam | plain |
| a1_diff_loss | L1 (diff) | cbam | plain |
| a2_gaussian | L1 | Gaussian, no mask | plain |
| a3_gaussian_pinwheel | L1 | Gaussian x pinwheel | plain |
| a4_fixed_rotation | L1 | 4 fixed rotations, max routing | plain |
| a5_rotated_pinwheel (= full model) | L1 | learnable rotation, STE, 4 arms | plain |
| a6_rotated_single_band | L1 | learnable rotation, STE, 1 band (paper's code) | plain |
| a7_rotated_soft | L1 | learnable rotation, soft mask (no STE) | plain |
| a8_pconv_sd | SD (AAAI 2025) | cbam | PConv k=4, 3 |
| a9_gsconv | L1 | Gaussian x pinwheel | GSConv |

    python main.py --config=configs/ablation/a3_gaussian_pinwheel.py --workdir=runs/a3
"""
