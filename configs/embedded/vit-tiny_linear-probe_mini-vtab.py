# Linear probing: the whole backbone is frozen (frozen_stages = depth also
# freezes patch/pos embeddings, [CLS] and the final norm); only the head
# trains, with a larger learning rate.
_base_ = ['./vit-tiny_full-ft_mini-vtab.py']
model = dict(backbone=dict(frozen_stages=6))
optim_wrapper = dict(optimizer=dict(lr=1e-2, weight_decay=0.))
