# Devices of QEMU 7.2's own vfio-user server as make bench-upstream builds
# it ($BUILD_ROOT/upstream, from the untouched source): the x-remote
# machine and what the benchmark exports.  Used with
# --without-default-devices.
# edu needs working MSI, which comes with an x86 machine
CONFIG_I440FX=y
CONFIG_PCI_EXPRESS=y
CONFIG_MULTIPROCESS=y
CONFIG_VFIO_USER_SERVER=y
CONFIG_EDU=y
CONFIG_NVME_PCI=y
CONFIG_PCI_TESTDEV=y
