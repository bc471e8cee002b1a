"""Lesson 4, training a classifier: CIFAR-10 through a Dataset and a DataLoader, the notes' net,
the training and testing procedures, accuracy per class, and moving the work to a device.

Data (--data): a CIFAR-10 image tree (`train/<class>/*.jpg`, `test/<class>/*.jpg`; a folder, a
tar/tar.gz of one, or a folder holding one such archive, as ../shared/data/cifar10 does), the
official python archive or its extracted folder ('cifar10' takes the cached download). The
lesson reads the first TRAIN_PER_CLASS and TEST_PER_CLASS images of each class. Without --data
it makes a small set of striped colour images instead, and says so.

Each `demo_*`/helper function returns what its step prints, so the tests check the claims.
"""

import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from torchtutor.lessons.narration import Narrator
from torchtutor.lessons.runner import LessonConfig, run_lesson
from torchtutor.runtime.checkpoint import load_checkpoint, save_checkpoint
from torchtutor.runtime.errors import UserError
from torchtutor.vision import cifar, folders
from torchtutor.vision.data import ImageDataset, resolve_source
from torchtutor.vision.evaluate import accuracy_report, confusion_matrix
from torchtutor.vision.models import TutorialNet, count_parameters

TRAIN_PER_CLASS = 250     # 2,500 training images: "a few hundred" per class, seconds to train
TEST_PER_CLASS = 100
BATCH_SIZE = 4            # the notes' values from here on
EPOCHS = 2
LR = 0.001
MOMENTUM = 0.9
PRINT_EVERY = 250         # mini-batches between printed statistics (the notes: 2000 of 12,500)
# The notes' transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): [0, 1] -> [-1, 1].
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]

GENERATED_COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 70, 210),
                     "yellow": (220, 200, 40), "purple": (150, 50, 190)}


@dataclass
class LessonData:
    classes: list[str]
    train_images: torch.Tensor    # uint8 (N, 3, 32, 32)
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str                   # where the images came from, in words


def generated_set(train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS,
                  seed: int = 0) -> LessonData:
    """Ten classes, five colours x stripes across or down, with noise and a random phase."""
    g = torch.Generator().manual_seed(seed)
    classes = [f"{c}-{d}" for c in GENERATED_COLOURS for d in ("across", "down")]

    def make(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(len(classes)).repeat_interleave(per_class)
        n = len(labels)
        colour = torch.tensor([GENERATED_COLOURS[c.split("-")[0]] for c in classes],
                              dtype=torch.float32)[labels].view(n, 3, 1, 1)
        phase = torch.randint(0, 8, (n, 1), generator=g)
        stripes = ((torch.arange(32).unsqueeze(0) + phase) // 4 % 2).float()   # (n, 32)
        down = (labels % 2 == 1).view(n, 1, 1)
        pattern = torch.where(down, stripes.view(n, 1, 32), stripes.view(n, 32, 1))
        pattern = pattern.view(n, 1, 32, 32)
        noise = torch.randn(n, 3, 32, 32, generator=g) * 25
        images = colour * (0.45 + 0.55 * pattern) + noise
        return images.clamp(0, 255).to(torch.uint8), labels

    (train_x, train_y), (test_x, test_y) = make(train_per_class), make(test_per_class)
    return LessonData(classes, train_x, train_y, test_x, test_y,
                      "a generated set (no --data given): striped colour images, not CIFAR-10")


def _first_per_class(images: torch.Tensor, labels: torch.Tensor, per_class: int,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in labels.unique()])
    keep = keep.sort().values
    return images[keep], labels[keep]


def _read_splits(path: Path, per_class: int) -> tuple[dict, Path]:
    """torchtutor's readers on `path`; image trees decode only `per_class` images per class.
    Returns the splits and the folder or archive they came from."""
    if path.is_dir():
        if (batches := cifar.is_cifar_folder(path)) is not None:
            return cifar.read_cifar_folder(batches), batches
        if not folders.list_folder(path):
            archives = sorted(p for p in path.iterdir() if p.name.endswith((".tar", ".tar.gz",
                                                                               ".tgz")))
            if len(archives) == 1:  # ../shared/data/cifar10 holds cifar10-jpeg.tar.gz
                return _read_splits(archives[0], per_class)
        return folders.read_image_folder(path, 32, per_class=per_class), path
    if not tarfile.is_tarfile(path):
        raise UserError(f"--data {path} is neither a folder nor a tar/tar.gz archive")
    with tarfile.open(path, "r:*") as tar:
        first = [Path(m.name).name for _, m in zip(range(20), tar, strict=False)]
    if cifar.TRAIN_BATCHES[0] in first:
        return cifar.read_cifar_archive(path), path
    print(f"reading {path} (a few seconds: a .tar.gz is read front to back)", file=sys.stderr)
    return folders.read_image_tar(path, 32, per_class=per_class), path


def load_lesson_data(data: str | None, train_per_class: int = TRAIN_PER_CLASS,
                     test_per_class: int = TEST_PER_CLASS) -> LessonData:
    if data is None:
        return generated_set(train_per_class, test_per_class)
    path = resolve_source(data)
    splits, source = _read_splits(path, max(train_per_class, test_per_class))
    if "test" not in splits:
        raise UserError(f"--data {data} has no test/ split (the lesson needs train/ and test/)")
    train = _first_per_class(*splits["train"], train_per_class)
    test = _first_per_class(*splits["test"], test_per_class)
    return LessonData(list(splits["classes"]), *train, *test, str(source))


def make_loaders(data: LessonData, batch_size: int = BATCH_SIZE,
                 ) -> tuple[ImageDataset, DataLoader, ImageDataset, DataLoader]:
    """The notes' trainset/trainloader and testset/testloader over torchtutor's Dataset."""
    trainset = ImageDataset(data.train_images, data.train_labels, MEAN, STD)
    testset = ImageDataset(data.test_images, data.test_labels, MEAN, STD)
    # num_workers=0: the images already sit in memory, and worker processes (the notes use 2)
    # would cost more to start than they save here.
    trainloader = DataLoader(trainset, batch_size=batch_size, shuffle=True, num_workers=0,
                             generator=torch.Generator().manual_seed(0))
    testloader = DataLoader(testset, batch_size=batch_size, shuffle=False, num_workers=0)
    return trainset, trainloader, testset, testloader


def train_network(net: nn.Module, trainloader: DataLoader, device: torch.device,
                  epochs: int = EPOCHS, print_every: int = PRINT_EVERY,
                  ) -> list[tuple[int, int, float]]:
    """The notes' loop; returns the printed statistics as (epoch, mini-batch, mean loss)."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    statistics = []
    for epoch in range(epochs):  # loop over the dataset multiple times
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            # get the inputs; data is a list of [inputs, labels], sent to the device every step
            inputs, labels = data[0].to(device), data[1].to(device)
            # zero the parameter gradients
            optimizer.zero_grad()
            # forward + backward + optimize
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            # print statistics
            running_loss += loss.item()
            if i % print_every == print_every - 1:
                statistics.append((epoch + 1, i + 1, running_loss / print_every))
                print(f"   [{epoch + 1}, {i + 1:5d}] loss: {running_loss / print_every:.3f}")
                running_loss = 0.0
    return statistics


def save_and_reload(net: nn.Module, folder: Path) -> nn.Module:
    """The notes' torch.save(net.state_dict(), PATH), then a fresh net loading it back."""
    path = save_checkpoint(folder / "cifar_net.pt", {"model": net.state_dict()})
    fresh = TutorialNet(len(net.fc3.weight)).to(next(net.parameters()).device)
    fresh.load_state_dict(load_checkpoint(path)["model"])
    return fresh


def accuracy_on_test_set(net: nn.Module, testloader: DataLoader, device: torch.device,
                  ) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """correct and total as the notes count them, plus every label and prediction."""
    correct = 0
    total = 0
    all_labels, all_predicted = [], []
    # since we're not training, we don't need to calculate the gradients for our outputs
    with torch.no_grad():
        for data in testloader:
            images, labels = data[0].to(device), data[1].to(device)
            # calculate outputs by running images through the network
            outputs = net(images)
            # the class with the highest energy is what we choose as prediction
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
            all_labels.append(labels.cpu())
            all_predicted.append(predicted.cpu())
    return correct, total, torch.cat(all_labels), torch.cat(all_predicted)


def per_class_accuracy(net: nn.Module, testloader: DataLoader, device: torch.device,
                       classes: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The notes' correct_pred and total_pred dictionaries."""
    correct_pred = {classname: 0 for classname in classes}
    total_pred = {classname: 0 for classname in classes}
    with torch.no_grad():
        for data in testloader:
            images, labels = data[0].to(device), data[1].to(device)
            _, predictions = torch.max(net(images), 1)
            # collect the correct predictions for each class
            for label, prediction in zip(labels, predictions, strict=True):
                if label == prediction:
                    correct_pred[classes[label]] += 1
                total_pred[classes[label]] += 1
    return correct_pred, total_pred


def demo_device(net: nn.Module, device: torch.device, images: torch.Tensor) -> dict[str, object]:
    """net.to(device) moves the parameters; inputs must be sent too; results match the CPU's."""
    net.to(device)
    inputs = images.to(device)
    on_device = net(inputs)
    cpu_copy = TutorialNet(len(net.fc3.weight))
    cpu_copy.load_state_dict({k: v.cpu() for k, v in net.state_dict().items()})
    on_cpu = cpu_copy(images.cpu())
    return {"parameters_on": next(net.parameters()).device, "inputs_on": inputs.device,
            "max_difference": (on_device.cpu() - on_cpu).abs().max().item()}


def run(device: torch.device, data: str | None = None) -> None:
    n = Narrator("Lesson 4: training a classifier", device)
    n.step("Load and normalize CIFAR10", "torchvision is not used: torchtutor decodes the images "
           "itself into uint8 tensors and wraps them in a torch.utils.data.Dataset. As in the "
           "notes, Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) maps [0, 1] to [-1, 1], and a "
           "DataLoader serves shuffled mini-batches of 4.",
           real="torchtutor.vision.data (load_data, ImageDataset), vision.folders, vision.cifar")
    lesson_data = load_lesson_data(data)
    trainset, trainloader, testset, testloader = make_loaders(lesson_data)
    n.show("data", lesson_data.source)
    n.show("classes", ", ".join(lesson_data.classes))
    n.show("training / test images", f"{len(trainset)} / {len(testset)}")

    n.step("Show some of the training images", "One mini-batch from iter(trainloader): four "
           "images of 3 x 32 x 32 and their labels.")
    images, labels = next(iter(trainloader))
    n.show("images.shape", tuple(images.shape))
    n.show("value range", f"{images.min().item():.3f} .. {images.max().item():.3f}")
    n.show("labels", " ".join(f"{lesson_data.classes[int(j)]:5s}" for j in labels))

    n.step("Define a Convolutional Neural Network", "The net from the networks lesson, taking "
           "3-channel images instead of 1-channel ones: conv 3->6 (5x5), pool, conv 6->16 "
           "(5x5), pool, then 400 -> 120 -> 84 -> 10.", real="torchtutor.vision.models.TutorialNet")
    net = TutorialNet(len(lesson_data.classes)).to(device)
    n.show("net", net)
    n.show("parameters", count_parameters(net))

    n.step("Define a Loss function and optimizer", "Classification cross-entropy and SGD with "
           "momentum, as in the notes.", real="torchtutor.vision.train (the tutorial recipe)")
    n.show("criterion", nn.CrossEntropyLoss())
    n.show("optimizer", f"SGD(lr={LR}, momentum={MOMENTUM})")

    n.step("Train the network", f"Loop over the data {EPOCHS} times: get the inputs, zero the "
           "parameter gradients, forward + backward + optimize, print statistics. The running "
           "loss falls.", real="torchtutor vision train --model tutorial --recipe tutorial")
    statistics = train_network(net, trainloader, device)
    n.show("first and last printed loss",
           f"{statistics[0][2]:.3f} -> {statistics[-1][2]:.3f}")

    n.step("Save our trained model", "The notes' torch.save(net.state_dict(), PATH); torchtutor "
           "writes checkpoints atomically and loads them with weights_only=True.",
           real="torchtutor.runtime.checkpoint")
    test_images, test_labels = next(iter(testloader))
    with tempfile.TemporaryDirectory() as folder:
        reloaded = save_and_reload(net, Path(folder))
    with torch.no_grad():
        same = torch.equal(net(test_images.to(device)), reloaded(test_images.to(device)))
    n.show("reloaded net gives the same outputs", same)

    n.step("Test the network on the test data", "The outputs are energies for the classes; the "
           "highest is the prediction: _, predicted = torch.max(outputs, 1).")
    with torch.no_grad():
        outputs = reloaded(test_images.to(device))
    _, predicted = torch.max(outputs, 1)
    n.show("GroundTruth", " ".join(f"{lesson_data.classes[int(j)]:5s}" for j in test_labels))
    n.show("Predicted  ", " ".join(f"{lesson_data.classes[int(j)]:5s}" for j in predicted))

    n.step("Accuracy on the whole test set", "Under torch.no_grad(), count "
           "correct += (predicted == labels).sum().item(). Guessing would get one in ten "
           "right.", real="torchtutor vision evaluate")
    correct, total, all_labels, all_predicted = accuracy_on_test_set(net, testloader, device)
    n.show(f"Accuracy of the network on the {total} test images",
           f"{100 * correct // total} % (chance: {100 // len(lesson_data.classes)} %)")

    n.step("What are the classes that performed well", "Count correct_pred and total_pred per "
           "class. torchtutor's confusion matrix gives the same figures.",
           real="torchtutor.vision.evaluate (confusion_matrix, accuracy_report)")
    correct_pred, total_pred = per_class_accuracy(net, testloader, device, lesson_data.classes)
    for classname, correct_count in correct_pred.items():
        accuracy = 100 * float(correct_count) / total_pred[classname]
        n.show(f"Accuracy for class: {classname:13s}", f"{accuracy:.1f} %")
    report = accuracy_report(confusion_matrix(all_labels, all_predicted,
                                              len(lesson_data.classes)), lesson_data.classes)
    n.show("confusion-matrix accuracy equals the count",
           round(report["accuracy"] * total) == correct)

    n.step("Training on GPU: seed the inputs and targets at every step", "The notes' word is "
           "a slip: the inputs and targets must be sent (not seeded) to the device at every "
           "step, as train_network does with data[0].to(device), after net.to(device). The "
           "device is torch.cuda.is_available()'s choice, or --device.",
           real="torchtutor.runtime.device.resolve_device")
    moved = demo_device(net, device, test_images)
    n.show("parameters on", moved["parameters_on"])
    n.show("inputs on", moved["inputs_on"])
    n.show("largest difference from the same net on the CPU", f"{moved['max_difference']:.2e}")

    n.step("Training on multiple GPUs", "DataParallel is the notes' pointer; torchtutor trains "
           "with DistributedDataParallel under torchrun instead, one process per GPU.",
           real="torchrun --nproc-per-node N -m torchtutor vision train (README)")
    n.show("torch.cuda.device_count()", torch.cuda.device_count())


def main(config: LessonConfig) -> int:
    return run_lesson(sys.modules[__name__], config, data=config.data)
