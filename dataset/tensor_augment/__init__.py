"""Batched augmentation on the device of the batch: weak / strong / contrastive views and RandAugmentMC.

The same augmentation as dataset/augment.py (the per-sample PIL port of FixMatch-pytorch),
computed on uint8 tensors (N, 3, H, W) wherever they live (GPU in training, CPU in tests), pixel
for pixel equal to Pillow's. Every random draw comes from a torch.Generator passed in, so a batch
depends only on the generator's seed; the global RNGs are never touched. In four parts:

- ops.py: the pixel ops, each reproducing Pillow's arithmetic, and the RandAugment pool;
- randaugment.py: RandAugmentMC (and USB's RandAugment), its draws, their plan on the host and its
  fixed-shape pass on the device;
- views.py: the weak view (flip and crop), the strong one, and the normalisation;
- contrastive.py: CCL's contrastive view (resized crop, colour jitter, grey, Gaussian blur).
"""
from dataset.tensor_augment.ops import (float_parameter, int_parameter, identity, auto_contrast, equalize, brightness,
                                        color, contrast, sharpness, posterize, solarize, fixed_point, affine_fixed,
                                        affine, rotate_matrix, shear_x_matrix, shear_y_matrix, translate_x_matrix,
                                        translate_y_matrix, MATRICES, rotate, shear_x, shear_y, translate_x,
                                        translate_y, cutout, cutout_box, POOL, SIGNED, op_parameter, apply_op, send)
from dataset.tensor_augment.randaugment import (slot_plan, run_slot, Draws, RandAugmentMC, RandAugmentUSB, USBDraws)
from dataset.tensor_augment.views import (crop_padding, crop_source, draw_weak, flip_crop, weak, strong, normalize)
from dataset.tensor_augment import contrastive

__all__ = ['float_parameter', 'int_parameter', 'identity', 'auto_contrast', 'equalize', 'brightness', 'color',
           'contrast', 'sharpness', 'posterize', 'solarize', 'fixed_point', 'affine_fixed', 'affine', 'rotate_matrix',
           'shear_x_matrix', 'shear_y_matrix', 'translate_x_matrix', 'translate_y_matrix', 'MATRICES', 'rotate',
           'shear_x', 'shear_y', 'translate_x', 'translate_y', 'cutout', 'cutout_box', 'POOL', 'SIGNED',
           'op_parameter', 'apply_op', 'send', 'slot_plan', 'run_slot', 'Draws', 'RandAugmentMC', 'RandAugmentUSB',
           'USBDraws', 'crop_padding',
           'crop_source', 'draw_weak', 'flip_crop', 'weak', 'strong', 'normalize', 'contrastive']
