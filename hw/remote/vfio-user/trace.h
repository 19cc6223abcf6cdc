#include "trace/trace-hw_remote_vfio_user.h"
