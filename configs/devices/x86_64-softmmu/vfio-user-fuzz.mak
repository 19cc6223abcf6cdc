# Devices of the sanitizer/fuzzing build ($BUILD_ROOT/qemu-fuzz): only what
# the fuzz targets and the qtests run under ASan need, to keep its cold
# build short.  Used with --without-default-devices.

# the client side: a PC with the vfio-user-pci device
CONFIG_I440FX=y
CONFIG_VFIO_USER_PCI=y
# the server side: -M remote exporting edu (and nvme, for the server qtest)
CONFIG_PCI_EXPRESS=y
CONFIG_VFIO_USER_REMOTE=y
CONFIG_EDU=y
CONFIG_NVME_PCI=y
# the PC's default display, which the qtests leave on
CONFIG_VGA_PCI=y
# and its other default devices (the qtests do not all use -nodefaults)
CONFIG_PARALLEL=y
CONFIG_E1000_PCI=y
# the server rogue qtest: BAR memory of ivshmem, lsi53c895a without MSI
CONFIG_IVSHMEM_DEVICE=y
CONFIG_LSI_SCSI_PCI=y
# and pci-testdev, whose doorbell it rings after the client was dropped
CONFIG_PCI_TESTDEV=y
