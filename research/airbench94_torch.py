# KellerJordan/cifar10-airbench legacy/airbench94.py (MIT), adapted only to run on a CPU in
# float32 and to read our seeded split (train 45,000 / validation 2,500) from an npz.
#
# Usage (its own environment: pip install torch numpy):
#   python research/airbench94_torch.py SPLIT.npz BATCH EPOCHS SEED
# SPLIT.npz from research/dump_split.py. Prints validation accuracy after every epoch, then
# with test-time augmentation levels 0, 1, 2 (none, mirror, mirror and translations).
import sys, time
from math import ceil
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

hyp = {'opt': {'train_epochs': 9.9, 'batch_size': 1024, 'lr': 11.5, 'momentum': 0.85,
               'weight_decay': 0.0153, 'bias_scaler': 64.0, 'label_smoothing': 0.2, 'whiten_bias_epochs': 3},
       'aug': {'flip': True, 'translate': 2},
       'net': {'widths': {'block1': 64, 'block2': 256, 'block3': 256}, 'batchnorm_momentum': 0.6,
               'scaling_factor': 1/9, 'tta_level': 2}}
CIFAR_MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)
normalize = lambda x: (x - CIFAR_MEAN) / CIFAR_STD

def batch_flip_lr(inputs):
    flip_mask = (torch.rand(len(inputs)) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip_mask, inputs.flip(-1), inputs)

def batch_crop(images, crop_size):
    r = (images.size(-1) - crop_size)//2
    shifts = torch.randint(-r, r+1, size=(len(images), 2))
    images_out = torch.empty((len(images), 3, crop_size, crop_size), dtype=images.dtype)
    for sy in range(-r, r+1):
        for sx in range(-r, r+1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            images_out[mask] = images[mask, :, r+sy:r+sy+crop_size, r+sx:r+sx+crop_size]
    return images_out

class CifarLoader:
    def __init__(self, images, labels, train, batch_size, aug=None):
        self.images = torch.tensor(images).float().div(255).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.tensor(labels).long()
        self.proc_images, self.epoch, self.aug = {}, 0, aug or {}
        self.batch_size, self.drop_last, self.shuffle = batch_size, train, train
    def __len__(self):
        return len(self.images)//self.batch_size if self.drop_last else ceil(len(self.images)/self.batch_size)
    def __iter__(self):
        if self.epoch == 0:
            images = self.proc_images['norm'] = normalize(self.images)
            if self.aug.get('flip', False):
                images = self.proc_images['flip'] = batch_flip_lr(images)
            pad = self.aug.get('translate', 0)
            if pad > 0:
                self.proc_images['pad'] = F.pad(images, (pad,)*4, 'reflect')
        if self.aug.get('translate', 0) > 0:
            images = batch_crop(self.proc_images['pad'], self.images.shape[-2])
        elif self.aug.get('flip', False):
            images = self.proc_images['flip']
        else:
            images = self.proc_images['norm']
        if self.aug.get('flip', False) and self.epoch % 2 == 1:
            images = images.flip(-1)
        self.epoch += 1
        indices = (torch.randperm if self.shuffle else torch.arange)(len(images))
        for i in range(len(self)):
            idxs = indices[i*self.batch_size:(i+1)*self.batch_size]
            yield (images[idxs], self.labels[idxs])

class Flatten(nn.Module):
    def forward(self, x): return x.reshape(x.size(0), -1)
class Mul(nn.Module):
    def __init__(self, scale):
        super().__init__(); self.scale = scale
    def forward(self, x): return x * self.scale
class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features, momentum, eps=1e-12, weight=False, bias=True):
        super().__init__(num_features, eps=eps, momentum=1-momentum)
        self.weight.requires_grad = weight
        self.bias.requires_grad = bias
class Conv(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size=3, padding='same', bias=False):
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias)
    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None: self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[:w.size(1)])
class ConvGroup(nn.Module):
    def __init__(self, channels_in, channels_out, batchnorm_momentum):
        super().__init__()
        self.conv1 = Conv(channels_in, channels_out); self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, batchnorm_momentum)
        self.conv2 = Conv(channels_out, channels_out); self.norm2 = BatchNorm(channels_out, batchnorm_momentum)
        self.activ = nn.GELU()
    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))

def make_net():
    widths, m = hyp['net']['widths'], hyp['net']['batchnorm_momentum']
    net = nn.Sequential(Conv(3, 24, 2, padding=0, bias=True), nn.GELU(),
                        ConvGroup(24, widths['block1'], m), ConvGroup(widths['block1'], widths['block2'], m),
                        ConvGroup(widths['block2'], widths['block3'], m), nn.MaxPool2d(3), Flatten(),
                        nn.Linear(widths['block3'], 10, bias=False), Mul(hyp['net']['scaling_factor']))
    net[0].weight.requires_grad = False
    return net.to(memory_format=torch.channels_last)

def get_patches(x, patch_shape):
    c, (h, w) = x.shape[1], patch_shape
    return x.unfold(2,h,1).unfold(3,w,1).transpose(1,3).reshape(-1,c,h,w).float()
def get_whitening_parameters(patches):
    n,c,h,w = patches.shape
    patches_flat = patches.view(n, -1)
    est_patch_covariance = (patches_flat.T @ patches_flat) / n
    eigenvalues, eigenvectors = torch.linalg.eigh(est_patch_covariance, UPLO='U')
    return eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c*h*w,c,h,w).flip(0)
def init_whitening_conv(layer, train_set, eps=5e-4):
    eigenvalues, eigenvectors = get_whitening_parameters(get_patches(train_set, layer.weight.data.shape[2:]))
    s = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((s, -s))

class LookaheadState:
    def __init__(self, net): self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}
    def update(self, net, decay):
        for ema_param, net_param in zip(self.net_ema.values(), net.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float):
                ema_param.lerp_(net_param, 1-decay); net_param.copy_(ema_param)

def infer(model, loader, tta_level=0):
    def infer_basic(inputs, net): return net(inputs).clone()
    def infer_mirror(inputs, net): return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))
    def infer_mirror_translate(inputs, net):
        logits = infer_mirror(inputs, net)
        padded = F.pad(inputs, (1,)*4, 'reflect')
        lt = torch.stack([infer_mirror(padded[:, :, 0:32, 0:32], net), infer_mirror(padded[:, :, 2:34, 2:34], net)]).mean(0)
        return 0.5 * logits + 0.5 * lt
    model.eval()
    test_images = normalize(loader.images)
    fn = [infer_basic, infer_mirror, infer_mirror_translate][tta_level]
    with torch.no_grad():
        return torch.cat([fn(x, model) for x in test_images.split(500)])
def evaluate(model, loader, tta_level=0):
    return (infer(model, loader, tta_level).argmax(1) == loader.labels).float().mean().item()

def main(npz, batch_size, epochs, seed):
    hyp['opt'].update(train_epochs=epochs, batch_size=batch_size)
    torch.manual_seed(seed)
    d = np.load(npz)
    batch_size, epochs, momentum = hyp['opt']['batch_size'], hyp['opt']['train_epochs'], hyp['opt']['momentum']
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = hyp['opt']['lr'] / kilostep_scale
    wd = hyp['opt']['weight_decay'] * batch_size / kilostep_scale
    lr_biases = lr * hyp['opt']['bias_scaler']
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp['opt']['label_smoothing'], reduction='none')
    test_loader = CifarLoader(d['x_val'], d['y_val'], False, 500)
    train_loader = CifarLoader(d['x_train'], d['y_train'], True, batch_size, aug=hyp['aug'])
    total_train_steps = ceil(len(train_loader) * epochs)
    model = make_net()
    norm_biases = [p for k, p in model.named_parameters() if 'norm' in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if 'norm' not in k and p.requires_grad]
    optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd/lr_biases),
                                 dict(params=other_params, lr=lr, weight_decay=wd/lr)], momentum=momentum, nesterov=True)
    def get_lr(step):
        warmup_steps = int(total_train_steps * 0.23)
        if step < warmup_steps:
            frac = step / warmup_steps; return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup_steps) / (total_train_steps - warmup_steps); return 1.0 * (1 - frac) + 0.07 * frac
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)
    alpha_schedule = 0.95**5 * (torch.arange(total_train_steps+1) / total_train_steps)**3
    lookahead_state = LookaheadState(model)
    init_whitening_conv(model[0], normalize(train_loader.images[:5000]))
    current_steps, start = 0, time.time()
    for epoch in range(ceil(epochs)):
        model[0].bias.requires_grad = (epoch < hyp['opt']['whiten_bias_epochs'])
        model.train(); t0 = time.time()
        for inputs, labels in train_loader:
            outputs = model(inputs.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True); loss.backward(); optimizer.step(); scheduler.step()
            current_steps += 1
            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())
            if current_steps >= total_train_steps:
                lookahead_state.update(model, decay=1.0); break
        sec = time.time() - t0
        print(f"epoch {epoch+1} val_acc {evaluate(model, test_loader):.4f} train_acc_last {(outputs.argmax(1)==labels).float().mean().item():.4f} "
              f"{sec:.1f}s {len(train_loader)*batch_size/sec:.0f} img/s", flush=True)
    print(f"final val tta0 {evaluate(model, test_loader, 0):.4f} tta1 {evaluate(model, test_loader, 1):.4f} "
          f"tta2 {evaluate(model, test_loader, 2):.4f} total {time.time()-start:.0f}s", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
